"""Milters in the policy chain (`[[milter]]`), through the real binary: the
chain asks plugins and milters in the order of the file; a milter's reply
codes become the client's replies; its end-of-message modifications (a
header added, a header changed, a recipient added) reach the spooled
message; a milter that dies or never answers costs the stage its
`on_error` within its timeout, loses nothing, and the next session works."""

import json
import os
import re
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from authkit import chunks, opendkim_verify
from fakemilter import FakeMilter
from harness import BIN, TARGET, ehlo, message, plugin, render_config
from test_metrics import scrape, value


def milter_toml(name, path, **settings):
    lines = ["[[milter]]", f'name = "{name}"', f'address = "unix:{path}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def plugin_toml(p):
    return render_config({}, [p]).replace("[server]\n", "", 1)


def test_chain_order_replies_and_modifications(start, tmp_path):
    m = FakeMilter(str(tmp_path / "m.sock"), reject_rcpt="both", change_subject="[checked] hi",
                   add_rcpt="copy@example.test")
    first = plugin("first", "test-rcpt-only", {"blocked": ["first", "both0"]})
    last = plugin("last", "test-rcpt-only", {"blocked": ["last", "both"]})
    # first, then the milter, then last.
    srv = start(plugins=[first], extra=milter_toml("scan", m.path) + plugin_toml(last))
    c = ehlo(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<first@example.test>") == (550, "5.1.1 first@example.test is blocked")
    assert c.cmd("RCPT TO:<both@example.test>") == (550, "5.7.1 milter says no")
    assert c.cmd("RCPT TO:<last@example.test>") == (550, "5.1.1 last@example.test is blocked")
    assert c.cmd("RCPT TO:<ok@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(message(subject="hi") + b".\r\n")
    code, text = c.reply()
    assert code == 250, text
    c.close()
    (qid,) = srv.queued()
    meta, data = srv.read_queued(qid)
    assert b"\r\nX-Milter: checked\r\n" in data
    assert b"\r\nSubject: [checked] hi\r\n" in data and b"Subject: hi\r\n" not in data
    rcpts = [r["address"] if isinstance(r, dict) else r for r in meta["recipients"]]
    assert "copy@example.test" in json.dumps(meta) and "ok@example.test" in json.dumps(meta), rcpts
    assert b"O" in m.commands and b"E" in m.commands
    m.stop()


def test_a_milter_that_dies_or_hangs_follows_on_error(start, tmp_path):
    dying = FakeMilter(str(tmp_path / "die.sock"), die_at_mail=True, add_header=None)
    srv = start(extra='[metrics]\nlisten = "127.0.0.1:0"\n' + milter_toml("dies", dying.path, command_timeout="2s"))
    for _ in range(2):      # the next session works the same way
        c = ehlo(srv.port)
        t0 = time.monotonic()
        code, text = c.cmd("MAIL FROM:<a@client.test>")
        assert (code, text) == (451, "4.3.0 Temporary policy failure, please try again later")
        assert time.monotonic() - t0 < 2
        c.close()
    assert dying.sessions == 2
    srv.wait_log(lambda r: r.get("milter") == "dies" and "milter failed" in r.get("message", ""))
    status = srv.admin("status").stdout
    assert f"milter dies             unix:{dying.path} on_error Tempfail: 6 calls, 2 failed" in status, status
    text = scrape(srv)
    assert value(text, "postern_milter_failures_total", milter="dies") == 2
    assert value(text, "postern_milter_verdicts_total", milter="dies", verdict="defer") == 2
    dying.stop()

    hanging = FakeMilter(str(tmp_path / "hang.sock"), hang_at_rcpt=True, add_header=None)
    srv = start(extra=milter_toml("hangs", hanging.path, command_timeout="1s", on_error="accept"))
    c = ehlo(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    t0 = time.monotonic()
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 250          # on_error = accept
    assert 0.9 < time.monotonic() - t0 < 3
    assert c.cmd("DATA")[0] == 354
    c.send(message() + b".\r\n")
    assert c.reply()[0] == 250
    c.close()
    assert len(srv.queued()) == 1                               # nothing lost
    hanging.stop()


# -- real milters from Debian ---------------------------------------------------

def daemon(cmd, sock: Path, what: str, timeout: float = 60.0):
    """Start a milter daemon in the foreground and wait for its socket."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
            proc.kill()
            pytest.fail(f"{what} did not start: {out}")
        time.sleep(0.05)
    return proc


@pytest.fixture
def opendkim(tmp_path):
    if not shutil.which("opendkim") and not Path("/usr/sbin/opendkim").exists():
        pytest.fail("opendkim is missing (Debian package opendkim; `make test` installs it)")
    d = tmp_path / "opendkim"
    d.mkdir()
    out = subprocess.run([str(BIN), "dkim", "keygen", "--domain", "example.test", "--selector", "s1",
                          "--dir", str(d)], capture_output=True, text=True, check=True).stdout
    record = "".join(re.findall(r'"([^"]*)"', out))
    sock = d / "opendkim.sock"
    (d / "opendkim.conf").write_text(textwrap.dedent(f"""\
        Syslog no
        Background no
        Mode s
        Canonicalization relaxed/relaxed
        Domain example.test
        Selector s1
        KeyFile {d}/example.test.s1.pem
        Socket local:{sock}
        InternalHosts 127.0.0.1
        PidFile {d}/opendkim.pid
        RequireSafeKeys false
        """))
    binary = shutil.which("opendkim") or "/usr/sbin/opendkim"
    proc = daemon([binary, "-f", "-x", str(d / "opendkim.conf")], sock, "opendkim")
    yield sock, record
    proc.terminate()
    proc.wait(10)


def test_opendkim_signs_outbound_mail_as_a_milter(start, opendkim, tmp_path):
    """OpenDKIM, Debian's, as a signing milter: mail from the example
    domain leaves the chain with a DKIM-Signature that opendkim-testmsg
    verifies against the published key."""
    sock, record = opendkim
    srv = start(extra=milter_toml("opendkim", sock))
    c = ehlo(srv.port)
    assert c.cmd("MAIL FROM:<alice@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: signed\r\n"
           b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n\r\n"
           b"Hello Bob.\r\n.dotted line\r\n.\r\n")
    code, text = c.reply()
    assert code == 250, [r for r in srv.log_records() if r.get("level") == "WARN"]
    c.close()
    (qid,) = srv.queued()
    _, data = srv.read_queued(qid)
    assert b"DKIM-Signature:" in data and b"d=example.test" in data and b"s=s1" in data
    # Verify what leaves the server (without our own Received field).
    message_out = data[data.index(b"DKIM-Signature:"):]
    r = opendkim_verify(message_out, {"s1._domainkey.example.test": chunks(record)}, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "", (r.returncode, r.stdout, r.stderr)
    # A changed body no longer verifies (the check can fail).
    r = opendkim_verify(message_out.replace(b"Hello Bob.", b"Hello Eve."),
                        {"s1._domainkey.example.test": chunks(record)}, tmp_path)
    assert r.returncode != 0 or r.stdout.strip() != ""


EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARKER = "POSTERN-TEST-SIGNATURE-5f2c1a9e"


def clamd_db(directory: Path):
    """A signature database of the tests' own (no download): EICAR and a
    marker string, as ClamAV extended (.ndb) signatures."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "postern.ndb").write_text(
        f"Postern.Test.EICAR:0:*:{EICAR.encode().hex()}\n"
        f"Postern.Test.Marker:0:*:{MARKER.encode().hex()}\n")


def which(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None)


@pytest.fixture
def clamd(tmp_path):
    binary = which("clamd")
    if not binary:
        pytest.fail("clamd is missing (Debian package clamav-daemon; `make test` installs it)")
    d = tmp_path / "clamd"
    clamd_db(d / "db")
    sock = d / "clamd.sock"
    (d / "clamd.conf").write_text(f"LocalSocket {sock}\nDatabaseDirectory {d / 'db'}\nForeground yes\n"
                                  f"PidFile {d / 'clamd.pid'}\nLogFile {d / 'clamd.log'}\n")
    proc = daemon([binary, "-c", str(d / "clamd.conf")], sock, "clamd")
    yield sock
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def clamav_milter(clamd, tmp_path):
    binary = which("clamav-milter")
    if not binary:
        pytest.fail("clamav-milter is missing (Debian package clamav-milter; `make test` installs it)")
    d = tmp_path / "clamav-milter"
    d.mkdir()
    sock = d / "milter.sock"
    (d / "milter.conf").write_text(f"MilterSocket {sock}\nClamdSocket unix:{clamd}\nForeground yes\n"
                                   f"PidFile {d / 'milter.pid'}\nOnInfected Reject\nOnFail Defer\n"
                                   f"AddHeader Replace\nLogFile {d / 'milter.log'}\n"
                                   "RejectMsg \"Virus found: %v\"\n")
    proc = daemon([binary, "-c", str(d / "milter.conf")], sock, "clamav-milter")
    yield sock
    proc.terminate()
    proc.wait(10)


def with_attachment(text: str) -> bytes:
    return ("From: a@client.test\r\nTo: b@example.test\r\nSubject: attached\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
            "see attached\r\n--XX\r\nContent-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment; filename=file.bin\r\n\r\n"
            f"{text}\r\n--XX--\r\n").encode()


def send_one(port, data: bytes):
    c = ehlo(port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(data + b".\r\n")
    r = c.reply()
    c.close()
    return r


def test_clamav_milter_rejects_infected_mail_and_tags_clean_mail(start, clamav_milter):
    """clamav-milter and clamd, Debian's, with the tests' own signatures:
    EICAR and the marker are refused at DATA, a clean message is accepted
    with clamav-milter's X-Virus-Scanned header."""
    srv = start(extra=milter_toml("clamav", clamav_milter, end_of_message_timeout="30s"))
    for bad, name in ((EICAR, "Postern.Test.EICAR"), (f"hello {MARKER} there", "Postern.Test.Marker")):
        code, text = send_one(srv.port, with_attachment(bad))
        assert code == 550 and text.startswith("5.7.1 Virus found: " + name), (code, text)
    assert srv.queued() == []
    code, text = send_one(srv.port, with_attachment("a harmless file"))
    assert code == 250, text
    (qid,) = srv.queued()
    _, data = srv.read_queued(qid)
    assert b"X-Virus-Scanned: " in data and b"X-Virus-Status: Clean" in data


GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rspamd(tmp_path):
    """A private rspamd (Debian's, its stock rules) with its proxy worker in
    milter mode on a unix socket and one scanner worker; no network (its
    DNS goes to a closed port)."""
    binary = which("rspamd")
    if not binary:
        pytest.fail("rspamd is missing (Debian package rspamd; `make test` installs it)")
    d = tmp_path / "rspamd"
    (d / "local" / "local.d").mkdir(parents=True)
    # The headers rspamd adds to what it scans (its milter_headers module).
    (d / "local" / "local.d" / "milter_headers.conf").write_text(
        'use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-level"];\nskip_local = false;\n')
    sock = d / "proxy.sock"
    port = free_port()
    (d / "rspamd.conf").write_text(textwrap.dedent(f"""\
        .include "$CONFDIR/common.conf"
        options {{
            pidfile = "$RUNDIR/rspamd.pid";
            .include "$CONFDIR/options.inc"
            dns {{ nameserver = ["127.0.0.1:1"]; timeout = 0.2s; retransmits = 1; }}
        }}
        logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "error"; }}
        worker "normal" {{
            bind_socket = "127.0.0.1:{port}";
            .include "$CONFDIR/worker-normal.inc"
        }}
        worker "rspamd_proxy" {{
            bind_socket = "{sock} mode=0666";
            milter = yes;
            timeout = 120s;
            count = 1;
            upstream "local" {{ default = yes; hosts = "127.0.0.1:{port}"; }}
            spam_header = "X-Spam";
            reject_message = "Spam message rejected";
        }}
        """))
    # Its compiled rule caches are kept between runs (they take seconds).
    db = TARGET / "rspamd-db"
    db.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "-f", "-i", "-c", str(d / "rspamd.conf"), "--var", "CONFDIR=/etc/rspamd",
           "--var", f"RUNDIR={d}", "--var", f"DBDIR={db}", "--var", f"LOGDIR={d}",
           "--var", f"LOCAL_CONFDIR={d / 'local'}"]
    if os.geteuid() == 0:
        cmd += ["-u", "root", "-g", "root"]
    proc = daemon(cmd, sock, "rspamd", timeout=120)
    # The scanner worker starts after the proxy: wait until it answers.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield sock
    proc.terminate()
    proc.wait(20)


def test_rspamd_through_its_milter_proxy(start, rspamd):
    """rspamd (Debian's) through its proxy worker in milter mode: GTUBE is
    rejected with rspamd's reply, a clean message is accepted with the
    headers rspamd adds."""
    srv = start(extra=milter_toml("rspamd", rspamd, end_of_message_timeout="60s"))
    spam = (b"From: a@client.test\r\nTo: b@example.test\r\nSubject: buy\r\n"
            b"Message-ID: <s@client.test>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\n"
            + GTUBE.encode() + b"\r\n")
    code, text = send_one(srv.port, spam)
    assert code == 554 and text.startswith("5.7.1 "), (code, text)
    assert srv.queued() == []
    clean = (b"From: a@client.test\r\nTo: b@example.test\r\nSubject: lunch\r\n"
             b"Message-ID: <c@client.test>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\n"
             b"Shall we have lunch on Friday?\r\n")
    code, text = send_one(srv.port, clean)
    assert code == 250, text
    (qid,) = srv.queued()
    _, data = srv.read_queued(qid)
    head = data[:data.index(b"\r\n\r\n")]
    assert re.search(rb"\r\nX-Spamd-Result: default: False \[", head), head.decode(errors="replace")
    assert b"\r\nX-Rspamd-Queue-Id: " in head, head.decode(errors="replace")
