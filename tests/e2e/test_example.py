"""The reference configuration (examples/postern.toml, what `make run`
serves) with its default plugin chain, started as the README starts it but
on an ephemeral port and a temporary data directory: the README's swaks
session is delivered to a Maildir, local mail for unknown mailboxes is
refused, VRFY and EXPN reveal nothing, relaying is refused (also through
every common open-relay trick), the submission listener wants STARTTLS and
AUTH, no login ships with the example, and a user added to it may relay
once authenticated."""

import mailbox
import re
import smtplib
import socket
import ssl
import subprocess
import time

import pytest
import tomllib
from example import EXAMPLE, PASSWORD, USER, start_example
from harness import ROOT, Raw
from pluginkit import plain, reply

@pytest.fixture(scope="module")
def example(tmp_path_factory):
    yield from start_example(tmp_path_factory.mktemp("example"))


def session(port, name="client.example"):
    c = Raw(port, timeout=30)
    code, text = c.reply()
    assert code == 220 and text.startswith("mx.example.test"), (code, text)
    assert c.cmd(f"EHLO {name}")[0] == 250
    return c


def test_the_chain_is_loaded(example):
    loaded = [r["plugin"] for r in example.records if r.get("message") == "plugin loaded"]
    assert loaded == ["access-log", "ip-access", "message-limits", "envelope-check", "relay-control", "vrfy-expn",
                      "attachment-scan", "auth-file"]


def test_local_delivery_is_accepted(example):
    with smtplib.SMTP("127.0.0.1", example.listening["smtp"], timeout=30) as s:
        s.ehlo("client.example")
        s.mail("me@client.example")
        assert s.rcpt("someone@example.test")[0] == 250
        code, text = s.data(b"Subject: hi\r\nFrom: me@client.example\r\n\r\nHello.\r\n")
        assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), (code, text)


def test_readme_swaks_session_is_delivered(example):
    """The README's first session: `swaks --to someone@example.test` is
    queued, then delivered to the Maildir under the data dir with a Received:
    field naming the client's address and the queue id."""
    port = example.listening["smtp"]
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--to", "someone@example.test"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^<-  250 2\.0\.0 Ok: queued as (\S+)$", r.stdout, re.M)
    assert m, r.stdout
    qid = m.group(1)
    maildir = example.data_dir / "mail" / "example.test" / "someone"
    deadline = time.time() + 30
    while True:
        found = [msg for msg in mailbox.Maildir(maildir, create=False)] if maildir.is_dir() else []
        found = [msg for msg in found if f"id {qid}" in " ".join((msg["Received"] or "").split())]
        if found or time.time() > deadline:
            break
        time.sleep(0.1)
    assert len(found) == 1, f"{qid} not delivered to {maildir}:\n{example.log()}"
    received = " ".join(found[0]["Received"].split())
    assert "[127.0.0.1]" in received and f"by mx.example.test (Postern) with ESMTP id {qid}" in received, received
    assert found[0]["Delivered-To"] == "someone@example.test"


def readme_python_example() -> str:
    """The README's Python example, exactly as printed there."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"```python\n(import smtplib\n.*?)```", text, re.S)
    assert m, "the README's Python example moved"
    return m.group(1)


@pytest.mark.parametrize("fqdn", ["container", "client.example"])
def test_readme_python_example_works_as_written(example, monkeypatch, fqdn):
    """The README's smtplib example, run as printed (only the port is the
    test's), on a machine whose host name is not fully qualified (then
    smtplib greets `EHLO [127.0.0.1]`: containers, most VMs) and on one
    whose name is. The message reaches the Maildir."""
    code = readme_python_example()
    assert '"127.0.0.1", 2525' in code
    code = code.replace('"127.0.0.1", 2525', f'"127.0.0.1", {example.listening["smtp"]}')
    monkeypatch.setattr(socket, "getfqdn", lambda name="": fqdn)
    maildir = example.data_dir / "mail" / "example.test" / "someone" / "new"
    before = set(maildir.iterdir()) if maildir.is_dir() else set()
    exec(compile(code, "README.md", "exec"), {})
    deadline = time.time() + 30
    while not (set(maildir.iterdir()) if maildir.is_dir() else set()) - before:
        assert time.time() < deadline, f"not delivered:\n{example.log()}"
        time.sleep(0.1)


def test_vrfy_and_expn_reveal_nothing(example):
    c = session(example.listening["smtp"])
    assert c.cmd("VRFY someone") == reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")
    assert c.cmd("EXPN staff") == reply(502, "5.5.1", "EXPN is disabled")


def test_unknown_local_mailbox_is_refused(example):
    c = session(example.listening["smtp"])
    assert c.cmd("MAIL FROM:<me@client.example>")[0] == 250
    assert c.cmd("RCPT TO:<nobody@example.test>") == \
        reply(550, "5.1.1", "<nobody@example.test>: Recipient address rejected: User unknown")
    for known in ("someone@example.test", "Postmaster@example.test", "alice@example.test"):
        assert c.cmd(f"RCPT TO:<{known}>")[0] == 250, known


def test_relay_is_refused(example):
    c = session(example.listening["smtp"])
    assert c.cmd("MAIL FROM:<me@client.example>")[0] == 250
    assert c.cmd("RCPT TO:<someone@elsewhere.example>") == \
        reply(554, "5.7.1", "someone@elsewhere.example: Relay access denied")


PROBES = [
    "someone@elsewhere.example",
    "someone@ELSEWHERE.EXAMPLE.",
    "someone%elsewhere.example@example.test",
    "someone%elsewhere.example@EXAMPLE.TEST.",
    '"someone@elsewhere.example"@example.test',
    '"someone%elsewhere.example"@example.test',
    "elsewhere.example!someone@example.test",
    "someone@[192.0.2.1]",
    "someone@[127.0.0.1]",
    "someone@[IPv6:::1]",
    "@example.test:someone@elsewhere.example",
    "@example.test,@mx.example.test:someone%elsewhere.example@example.test",
]


@pytest.mark.parametrize("address", PROBES)
def test_open_relay_probes_are_refused(example, address):
    """A remote destination is refused by relay-control; a trick hidden in a
    local address (%, !, quoted @) names no known mailbox, so envelope-check,
    which comes first in the chain, refuses it as an unknown user."""
    c = session(example.listening["smtp"])
    assert c.cmd("MAIL FROM:<probe@client.example>")[0] == 250
    code, text = c.cmd(f"RCPT TO:<{address}>")
    if re.search(r"@example\.test\.?$", address, re.I):
        assert (code, text.split(" ", 1)[0]) == (550, "5.1.1"), (address, code, text)
        assert text.endswith("Recipient address rejected: User unknown")
    else:
        assert (code, text.split(" ", 1)[0]) == (554, "5.7.1"), (address, code, text)
        assert text.endswith("Relay access denied")


def test_eicar_is_refused(example):
    eicar = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    with smtplib.SMTP("127.0.0.1", example.listening["smtp"], timeout=30) as s:
        s.ehlo("client.example")
        s.mail("me@client.example")
        s.rcpt("someone@example.test")
        code, text = s.data(f"Subject: test\r\n\r\n{eicar}\r\n".encode())
        assert (code, text) == (554, b"5.7.0 Message rejected: virus EICAR-Test-File found")


def tls_client(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("client.example")
    s.starttls(context=ctx)
    s.ehlo("client.example")
    return s


def test_the_example_ships_no_usable_login(example):
    """The example ships no account (the users table is empty), so the login
    it once shipped (alice / example-password) does not authenticate."""
    cfg = tomllib.loads(EXAMPLE.read_text())
    (auth,) = [p for p in cfg["plugin"] if p["name"] == "auth-file"]
    assert auth["config"]["users"] == {}
    for user, password in [("alice", "example-password"), ("admin", "admin")]:
        # One session and one mechanism each (smtplib's login() would try
        # every mechanism, and three failures end a session).
        with tls_client(example.listening["submission"]) as s:
            s.user, s.password = user, password
            with pytest.raises(smtplib.SMTPAuthenticationError) as e:
                s.auth("PLAIN", s.auth_plain)
            assert (e.value.smtp_code, e.value.smtp_error) == (535, b"5.7.8 Authentication credentials invalid")


def test_submission_needs_tls_and_auth_then_relays(example):
    port = example.listening["submission"]
    c = session(port)
    assert c.cmd(f"MAIL FROM:<{USER}@example.test>")[0] == 530
    assert c.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}")[0] == 538
    c.close()
    with tls_client(port) as s:
        assert "PLAIN" in s.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(USER, "wrong-password")
        assert s.login(USER, PASSWORD)[0] == 235
        assert s.mail(f"{USER}@example.test")[0] == 250
        assert s.rcpt("someone@elsewhere.example")[0] == 250
        s.rset()
