"""Postfix 3.x as a real peer in both directions, for DSN (RFC 3461): a
private Postfix instance (its own config, queue and log directories, started
with `postfix -c DIR`; the system's instance is never touched) relays to
Postern and Postern relays to it.

- Postern -> Postfix: Postern hands NOTIFY, ORCPT and ENVID to Postfix (it
  offers DSN) and sends no success notice itself; Postfix discards the
  message, writes its own RFC 3464 success notice and relays it back to
  Postern, which files it in the sender's Maildir: the notice names the
  ENVID and ORCPT Postern handed on.
- Postfix -> Postern: Postfix relays a client's NOTIFY=SUCCESS and ORCPT to
  Postern (Postern offers DSN); Postern delivers to a Maildir and sends the
  success notice (Action: delivered) back through Postfix.
- Postern -> Postfix without 8BITMIME and SMTPUTF8 (smtpd_discard_ehlo_keywords,
  issue 15): an 8-bit message arrives converted to 7-bit quoted-printable
  (Postfix relays it on to a Python sink that keeps the bytes); an SMTPUTF8
  message with UTF-8 headers is bounced by Postern with 5.6.7.

Needs root (Postfix's master starts as root) and the postfix package (make
test installs it); skipped otherwise, failed under CI/POSTERN_REQUIRE_PEERS."""

from __future__ import annotations

import fcntl
import os
import quopri
import shutil
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import pytest
from test_8bitmime import TEXT, bounce_status, message
from test_8bitmime import submit as submit_8bit
from test_delivery import (delivery, free_port, maildir, maildir_count, relay, report_fields,
                           sink, wait_until, _listening)  # noqa: F401 (sink is a fixture)

POSTFIX = Path("/usr/sbin/postfix")

MAIN_CF = """compatibility_level = 3.6
config_directory = {conf}
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {log}
maillog_file_prefixes = {base}
myhostname = postfix.peer.test
mydomain = peer.test
myorigin = $mydomain
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains =
relayhost = [127.0.0.1]:{postern}
transport_maps = inline:{{ remote.test=discard: }}
local_recipient_maps =
alias_maps =
alias_database =
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_client_connection_rate_limit = 0
biff = no
"""

MASTER_CF = """127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _postfix(conf: Path, *args: str, timeout: float = 60) -> None:
    """Run `postfix -c CONF ARGS...` in its own session, without pipes: a
    Postfix command that blocks (e.g. on a logging socket nobody reads) is
    killed with its children after `timeout` instead of hanging the suite."""
    p = subprocess.Popen([str(POSTFIX), "-c", str(conf), *args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise AssertionError(f"postfix {' '.join(args)} did not finish within {timeout:.0f} s")
    if rc != 0 and args[0] != "stop":
        raise AssertionError(f"postfix {' '.join(args)} failed with exit status {rc}")


def _kill_master(queue: Path) -> None:
    """Kill a private instance's master and its daemons (its process group),
    when `postfix stop` could not."""
    try:
        pid = int((queue / "pid" / "master.pid").read_text().split()[0])
        os.killpg(pid, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass


@pytest.fixture
def postfix():
    """Start a private Postfix relaying everything but remote.test (discarded)
    to Postern's port; yields a function(postern_port, main_extra="") -> smtpd
    port, `main_extra` being main.cf lines that override the defaults. One
    private instance at a time across pytest-xdist workers (a file lock):
    two running at once have left Postfix's logging blocked."""
    if not POSTFIX.exists() or os.geteuid() != 0:
        if os.environ.get("CI") or os.environ.get("POSTERN_REQUIRE_PEERS"):
            pytest.fail("Postfix peer tests need root and the postfix package")
        pytest.skip("needs root and postfix")
    lock = open("/tmp/postern-postfix-peer.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    # Outside pytest's 0700 tmp dirs: Postfix's daemons run as postfix.
    base = Path(subprocess.check_output(["mktemp", "-d", "/tmp/postern-postfix-XXXXXX"], text=True).strip())
    os.chmod(base, 0o755)
    conf, queue, data = base / "conf", base / "queue", base / "data"
    started = []

    def _start(postern_port: int, main_extra: str = "") -> int:
        for d in (conf, queue, data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postfix")
        port = free_port()
        (conf / "main.cf").write_text(MAIN_CF.format(conf=conf, queue=queue, data=data, base=base,
                                                     log=base / "maillog", postern=postern_port)
                                     + main_extra)
        (conf / "master.cf").write_text(MASTER_CF.format(port=port))
        _postfix(conf, "check")
        started.append(True)
        _postfix(conf, "start")
        wait_until(lambda: _listening(port), 30, "postfix to listen")
        return port

    _start.log = lambda: (base / "maillog").read_text(errors="replace") if (base / "maillog").exists() else ""
    try:
        yield _start
    finally:
        if started:
            try:
                _postfix(conf, "stop", timeout=30)
            except AssertionError:
                _kill_master(queue)
                raise
        shutil.rmtree(base, ignore_errors=True)
        lock.close()


def submit(port, sender, rcpt, subject, mail_options=(), rcpt_options=()):
    msg = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject}.{time.time_ns()}@client.test>\r\n\r\nHello.\r\n").encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        assert s.has_extn("dsn")
        s.sendmail(sender, [rcpt], msg, mail_options=list(mail_options), rcpt_options=list(rcpt_options))


def test_dsn_parameters_pass_both_ways_with_postfix(start, postfix):
    port = free_port()
    pf = postfix(port)
    srv = start(listen=[f"127.0.0.1:{port}"], plugins=[relay()],
                extra=delivery(relayhost=f"127.0.0.1:{pf}"))

    # Postern -> Postfix: Postfix takes NOTIFY over and reports itself.
    submit(srv.port, "alice@example.test", "bob@remote.test", "to-postfix",
           mail_options=["ENVID=PF+2B1", "RET=HDRS"],
           rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob@remote.test"])
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, 60,
               "Postfix's success notice back in alice's Maildir", srv)
    (dsn,) = list(maildir(srv, "alice@example.test"))
    f = report_fields(dsn)
    assert f["Reporting-MTA"] == "dns; postfix.peer.test", f
    assert f["Original-Envelope-Id"] in ("PF+2B1", "PF+1"), f  # xtext, or decoded
    assert f["Original-Recipient"].replace(" ", "") == "rfc822;Bob@remote.test", f
    assert f["Action"] in ("delivered", "relayed") and f["Status"].startswith("2."), f
    delivered = srv.wait_log(lambda r: r.get("message") == "delivered" and r.get("to") == "bob@remote.test")
    assert delivered["handover"] == "dsn-handed-on" and delivered["detail"].startswith("relay="), delivered
    assert not [r for r in srv.log_records() if r.get("message") == "success notice queued"]

    # Postfix -> Postern: Postern gets NOTIFY and ORCPT and reports itself.
    submit(pf, "carol@remote.test", "dave@example.test", "from-postfix",
           rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;Dave@example.test"])
    wait_until(lambda: maildir_count(srv, "dave@example.test") == 1, 60, "delivery through Postfix", srv)
    rec = srv.wait_log(lambda r: r.get("message") == "success notice queued", 30)
    assert rec["to"] == "carol@remote.test" and rec["delivered"] == 1
    # The notice went back out through Postfix (remote.test is discarded there).
    wait_until(lambda: "to=<carol@remote.test>" in postfix.log(), 30, "the notice at Postfix", srv)


def test_8bitmime_and_smtputf8_towards_a_postfix_without_them(start, postfix, sink):
    kept = sink()  # where Postfix relays remote.test, keeping the bytes
    port = free_port()
    pf = postfix(port, main_extra=(
        "smtpd_discard_ehlo_keywords = 8bitmime, smtputf8\n"
        f"transport_maps = inline:{{ remote.test=smtp:[127.0.0.1]:{kept.port} }}\n"))
    with smtplib.SMTP("127.0.0.1", pf, timeout=30) as c:
        c.ehlo("client.test")
        assert not c.has_extn("8bitmime") and not c.has_extn("smtputf8")
    srv = start(listen=[f"127.0.0.1:{port}"], plugins=[relay()],
                extra=delivery(relayhost=f"127.0.0.1:{pf}"))

    # (a) 8-bit text, BODY=8BITMIME: converted by Postern, relayed by Postfix.
    submit_8bit(srv.port, "alice@example.test", "bob@remote.test",
                message("alice@example.test", "bob@remote.test", "via-postfix"))
    wait_until(lambda: kept.count == 1, 60, "the message through Postfix", srv)
    got = kept.messages[0].data
    assert got.isascii(), got[:400]
    head, body = got.split(b"\r\n\r\n", 1)
    assert b"Content-Transfer-Encoding: quoted-printable" in head, head
    assert b"postfix.peer.test" in head  # it went through Postfix
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    assert quopri.decodestring(body).decode() == TEXT
    assert "status=sent" in postfix.log()

    # (b) SMTPUTF8 with UTF-8 headers: Postfix does not offer it, Postern bounces.
    submit_8bit(srv.port, "alice@example.test", "carol@remote.test",
                message("alice@example.test", "carol@remote.test", "Grüße", body="hi\r\n"),
                options=("SMTPUTF8", "BODY=8BITMIME"))
    f = bounce_status(srv, "alice@example.test")
    assert f["Status"] == "5.6.7" and f["Action"] == "failed", f
    assert "carol@remote.test" not in postfix.log()
    assert kept.count == 1
