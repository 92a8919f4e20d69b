"""Recipient-enumeration resistance (issue 13, point 5) against the real
binary running the reference configuration (examples/postern.toml: its
plugin chain, envelope-check with the mailboxes postmaster, someone and
alice) with short delays and windows so the file stays quick: refused RCPT
TO are answered promptly up to `max_unknown_recipients`, later RCPTs wait
`unknown_recipient_delay`, two more refusals later the session gets 421 and
is closed; a client address over `client_unknown_recipient_limit` gets 421
at the first RCPT of its next sessions until the window has passed, while
other addresses go on; nmap's smtp-enum-users lists no mailbox.

Each test speaks from its own loopback address (the whole 127.0.0.0/8 is
local on Linux), so the per-client counts of one test never reach another."""

import json
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest
from harness import BIN, CACHE_DIR, ROOT, Raw, Server, message, toml_value
from pluginkit import hash_password, plain

EXAMPLE = ROOT / "examples" / "postern.toml"
USER, PASSWORD = "lister", "a test password for the enumeration suite"
MAILBOXES = ["postmaster", "someone", "alice"]

DELAY = 0.5  # unknown_recipient_delay, seconds
LIMIT = 5  # max_unknown_recipients (the default)
CLIENT_LIMIT = 10  # client_unknown_recipient_limit
WINDOW = 5.0  # client_unknown_recipient_window, seconds
EXEMPT = "127.0.0.14"
SETTINGS = {
    "max_unknown_recipients": LIMIT,
    "unknown_recipient_delay": f"{int(DELAY * 1000)}ms",
    "client_unknown_recipient_limit": CLIENT_LIMIT,
    "client_unknown_recipient_window": f"{int(WINDOW)}s",
    "unknown_recipient_exempt_networks": [f"{EXEMPT}/32"],
}


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"examples/postern.toml changed: {old!r} not found once"
    return text.replace(old, new)


def example_server(tmp, **settings) -> Server:
    """The reference configuration as shipped, with the test's [server]
    settings, ephemeral ports, a temporary data directory, a certificate of
    its own, the plugin cache shared by the e2e suite, a metrics endpoint
    and one user for auth-file (the example ships none)."""
    tls = tmp / "tls"
    subprocess.run([str(BIN), "gen-cert", "--hostname", "mx.example.test", "--dir", str(tls)],
                   check=True, capture_output=True)
    srv = Server(tmp)
    text = EXAMPLE.read_text()
    text = re.sub(r'= "\.\./', f'= "{ROOT}/', text)  # the components
    text = replace_once(text, 'listen = ["127.0.0.1:2525"]', 'listen = ["127.0.0.1:0"]')
    text = replace_once(text, 'address = "127.0.0.1:5870"', 'address = "127.0.0.1:0"')
    text = replace_once(text, 'data_dir = "data"\n', f"data_dir = {json.dumps(str(srv.data_dir))}\n")
    text = replace_once(text, 'cert = "data/tls/cert.pem"', f"cert = {json.dumps(str(tls / 'cert.pem'))}")
    text = replace_once(text, 'key = "data/tls/key.pem"', f"key = {json.dumps(str(tls / 'key.pem'))}")
    text = replace_once(text, "[runtime]\n", f"[runtime]\ncache_dir = {json.dumps(str(CACHE_DIR))}\n")
    text = replace_once(text, "[plugin.config.users]\n",
                        f"[plugin.config.users]\n{USER} = {json.dumps(hash_password(PASSWORD))}\n")
    text = replace_once(text, "[server]\n",
                        "[server]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items()))
    text += '\n[metrics]\nlisten = "127.0.0.1:0"\n'
    srv.config_path.write_text(text)
    srv.start()
    srv.smtp = int(srv.wait_log(lambda r: r.get("message") == "listening" and r.get("listener") == "smtp")
                   ["address"].rsplit(":", 1)[1])
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = example_server(tmp_path_factory.mktemp("enum"), **SETTINGS)
    yield srv
    srv.stop()


class Client(Raw):
    """A raw SMTP client speaking from a loopback address of its own."""

    def __init__(self, port: int, source: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
        self.buf = b""

    def transaction(self) -> "Client":
        assert self.reply()[0] == 220
        assert self.cmd("EHLO client.example")[0] == 250
        assert self.cmd("MAIL FROM:<probe@client.example>")[0] == 250
        return self

    def timed(self, line: str) -> tuple[int, str, float]:
        t = time.monotonic()
        code, text = self.cmd(line)
        return code, text, time.monotonic() - t


def scrape(srv) -> dict[str, float]:
    rec = srv.wait_log(lambda r: r.get("message") == "metrics listening")
    with urllib.request.urlopen(f"http://{rec['address']}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^postern_unknown_recipients_total\{event="(\w+)"\} (\S+)$', text, re.M)}


def test_one_session_is_slowed_then_closed(server):
    """(a) 30 unknown names in one session: the first five get 550 at once,
    the next RCPTs wait the delay, the eighth gets 421 4.7.1 and the
    connection is closed; the rest are never answered."""
    before = scrape(server)
    c = Client(server.smtp, "127.0.0.11").transaction()
    answers = []
    for i in range(30):
        try:
            answers.append(c.timed(f"RCPT TO:<nobody{i:02d}@example.test>"))
        except (EOFError, ConnectionResetError):
            break
        if answers[-1][0] == 421:
            break
    print(*(f"{code} {t:.3f}s {text}" for code, text, t in answers), sep="\n")  # shown with -s or on failure
    codes = [code for code, _, _ in answers]
    assert codes == [550] * (LIMIT + 2) + [421], answers
    assert all(t < DELAY for _, _, t in answers[:LIMIT]), answers
    assert all(t >= DELAY for _, _, t in answers[LIMIT:]), answers
    assert answers[0][1] == "5.1.1 <nobody00@example.test>: Recipient address rejected: User unknown"
    assert answers[-1][1] == "4.7.1 mx.example.test Too many unknown recipients, closing connection"
    assert c.closed(), "the connection stays open after 421"
    after = scrape(server)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("refused", "delayed", "session_limit", "client_limit")}
    # Eight refusals counted: the eighth was answered 421.
    assert delta == {"refused": LIMIT + 3, "delayed": 3, "session_limit": 1, "client_limit": 0}, delta


def test_the_client_limit_holds_across_sessions_for_that_address_only(server):
    """(b) Refusals add up per client address over sessions: past the
    limit, a new connection from that address gets 421 at its first RCPT,
    a known mailbox too; another address still gets its mail through; once
    the window has passed, the first address is served again."""
    blocked = "127.0.0.12"
    c = Client(server.smtp, blocked).transaction()
    first = time.monotonic()
    codes = [c.cmd(f"RCPT TO:<ghost{i}@example.test>")[0] for i in range(LIMIT + 3)]
    assert codes == [550] * (LIMIT + 2) + [421], codes
    # The next session: the client's eight refusals so far count (the one
    # answered 421 too), the session's own start at 0.
    c = Client(server.smtp, blocked).transaction()
    left = CLIENT_LIMIT - (LIMIT + 3)
    codes = [c.cmd(f"RCPT TO:<phantom{i}@example.test>")[0] for i in range(left + 1)]
    assert codes == [550] * left + [421], codes
    # A new connection: refused at its first RCPT, whatever it asks for.
    c = Client(server.smtp, blocked).transaction()
    code, text = c.cmd("RCPT TO:<someone@example.test>")
    assert (code, text) == (421, "4.7.1 mx.example.test Too many unknown recipients from your address, "
                                 "try again later")
    assert c.closed()
    assert time.monotonic() - first < WINDOW, "too slow to see the window's limit: raise WINDOW"
    # Another client address is not concerned: mail for a known mailbox goes through.
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30, source_address=("127.0.0.13", 0)) as s:
        s.ehlo("other.example")
        s.mail("me@other.example")
        assert s.rcpt("nobody@example.test")[0] == 550
        assert s.rcpt("alice@example.test")[0] == 250
        code, text = s.data(message("from another address"))
        assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), (code, text)
    # After the window, the blocked address is served again.
    time.sleep(max(0.0, first + WINDOW + 0.5 - time.monotonic()))
    c = Client(server.smtp, blocked).transaction()
    assert c.cmd("RCPT TO:<someone@example.test>")[0] == 250


def test_a_sender_with_a_few_stale_addresses_gets_its_message_through(server):
    """A list server whose message names more stale addresses than the
    limit (up to two more): it is slowed, not refused; the message for the
    valid recipients is queued."""
    stale = [f"left{i}@example.test" for i in range(LIMIT + 2)]
    valid = ["someone@example.test", "alice@example.test"]
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30, source_address=("127.0.0.16", 0)) as s:
        s.ehlo("lists.example")
        refused = s.sendmail("list@lists.example", stale + valid, message("newsletter"))
    assert sorted(refused) == sorted(stale)
    assert {code for code, _ in refused.values()} == {550}


def test_exempt_networks_and_authenticated_sessions_are_not_limited(server):
    """A client in unknown_recipient_exempt_networks, and an authenticated
    session, get every refusal at once and are never closed."""
    c = Client(server.smtp, EXEMPT).transaction()
    answers = [c.timed(f"RCPT TO:<stranger{i}@example.test>") for i in range(LIMIT + 5)]
    assert [code for code, _, _ in answers] == [550] * (LIMIT + 5), answers
    assert all(t < DELAY for _, _, t in answers), answers
    assert c.cmd("RCPT TO:<someone@example.test>")[0] == 250

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30, source_address=("127.0.0.15", 0)) as s:
        s.ehlo("client.example")
        s.starttls(context=ctx)
        s.ehlo("client.example")
        assert s.docmd("AUTH", f"PLAIN {plain(USER, PASSWORD)}")[0] == 235
        s.mail(f"{USER}@example.test")
        for i in range(CLIENT_LIMIT + 2):
            t = time.monotonic()
            assert s.rcpt(f"old{i}@example.test")[0] == 550
            assert time.monotonic() - t < DELAY
        assert s.rcpt("someone@example.test")[0] == 250


def nmap_enum(port: int, userdb, tmp, source: str | None = None) -> str:
    """Run nmap's smtp-enum-users (RCPT method) with `userdb`, from
    `source` (a loopback address of this machine: nmap's -S binds its
    connect() there); the script's output."""
    if not shutil.which("nmap"):
        pytest.fail("nmap is missing: install it (`apt-get install nmap`; .ci/run does)", pytrace=False)
    db = tmp / "users.txt"
    db.write_text("".join(f"{u}\n" for u in userdb))
    spoof = ["-S", source, "-e", "lo"] if source else []
    # "+" runs the script although the port is not a well-known SMTP port.
    run = subprocess.run(
        ["nmap", "-Pn", "-sT", *spoof, "-p", str(port), "--script", "+smtp-enum-users", "--script-args",
         f"smtp-enum-users.methods={{RCPT}},smtp-enum-users.domain=example.test,userdb={db}", "127.0.0.1"],
        capture_output=True, text=True, timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "smtp-enum-users:" in out, out
    found = out.split("smtp-enum-users:", 1)[1].split("\n\n", 1)[0]
    print(userdb[:3], "->", found)  # shown with -s or on failure
    return found


def listed(found: str) -> list[str]:
    return [m for m in MAILBOXES if re.search(rf"\b{m}\b", found)]


def test_nmap_smtp_enum_users_lists_no_mailbox(tmp_path):
    """(c) nmap's smtp-enum-users lists no real mailbox, neither in one run
    over many unknown names followed by the example's mailboxes, nor when a
    prober runs it again and again, one name per run: after the client's
    limit of refusals every run gets 421 at its first RCPT. From an exempt
    address the same script lists all three: it does see mailboxes where
    the server lets it.

    The script itself stops at the first 550: its RCPT method sends MAIL
    FROM again after a refusal, which an RFC 5321 server answers 503
    (nested MAIL), so one run learns at most one unknown name; a prober
    has to run it per name, and the per-client limit is what stops that."""
    limit = 4
    srv = example_server(tmp_path / "srv", max_unknown_recipients=LIMIT, unknown_recipient_delay="500ms",
                         client_unknown_recipient_limit=limit, client_unknown_recipient_window="1h",
                         unknown_recipient_exempt_networks=[EXEMPT])
    try:
        assert listed(nmap_enum(srv.smtp, MAILBOXES, tmp_path, source=EXEMPT)) == MAILBOXES

        unknown = [f"user{i:03d}" for i in range(limit + 2)]
        assert listed(nmap_enum(srv.smtp, unknown + MAILBOXES, tmp_path)) == []
        before = scrape(srv)
        runs = [nmap_enum(srv.smtp, [name], tmp_path) for name in unknown[1:] + MAILBOXES]
        assert [listed(found) for found in runs] == [[]] * len(runs), runs
        # The first refusals are told (no account found), then the client is refused.
        told = limit - 1
        assert all("Couldn't find any accounts" in found for found in runs[:told]), runs
        assert all("unhandled status code" in found for found in runs[told:]), runs
        after = scrape(srv)
        assert after["client_limit"] - before.get("client_limit", 0) == len(runs) - told, (before, after)
    finally:
        srv.stop()


def test_shutdown_cuts_a_delay_short(tmp_path):
    """A session waiting out its delay is answered 421 4.3.2 as soon as the
    server shuts down, not after the delay."""
    srv = example_server(tmp_path, max_unknown_recipients=1, unknown_recipient_delay="60s")
    try:
        c = Client(srv.smtp, "127.0.0.17").transaction()
        assert c.cmd("RCPT TO:<nobody@example.test>")[0] == 550
        c.send("RCPT TO:<someone@example.test>\r\n")
        time.sleep(0.5)  # the server is waiting out the delay now
        t = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        code, text = c.reply()
        assert (code, text) == (421, "4.3.2 mx.example.test Service shutting down, try again later")
        assert time.monotonic() - t < 10
        assert srv.proc.wait(20) == 0
    finally:
        srv.stop()
