"""Delivery: the queue manager takes accepted mail from the spool and delivers
it — to local Maildirs, to a relayhost, to MX hosts found through DNS (with
STARTTLS) — retries 4xx, bounces 5xx with an RFC 3464 report to the sender,
survives kill -9 without losing a message, and answers `postern queue`."""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness import BIN, DnsServer, Server, plugin, toml_value
from sinks import SmtpSink, make_certs, server_tls

SMTP_SINK = Path("/usr/sbin/smtp-sink")


def relay():
    """Lets test clients on loopback relay to remote domains."""
    return plugin("relay-control", config={"relay_networks": ["127.0.0.0/8"]})


def delivery(**settings) -> str:
    settings.setdefault("retry_intervals", ["1s"])
    lines = ["[delivery]"] + [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def wait_until(pred, timeout: float = 30.0, what: str = "condition", srv: Server | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    log = "\n".join(srv.raw_log[-40:]) if srv else ""
    raise AssertionError(f"timed out waiting for {what}\n{log}")


def send(port: int, sender: str, rcpts: list[str], subject: str, body: str = "Hello.\r\n") -> None:
    msg = (
        f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}.{time.time_ns()}@client.test>\r\n\r\n{body}"
    ).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, rcpts, msg)


def queue_empty(srv: Server) -> bool:
    return (srv.spool_dir / "log").is_dir() and not srv.queued()


def maildir(srv: Server, address: str) -> mailbox.Maildir:
    local, domain = address.split("@")
    return mailbox.Maildir(srv.data_dir / "mail" / domain / local, factory=None, create=False)


def maildir_count(srv: Server, address: str) -> int:
    local, domain = address.split("@")
    new = srv.data_dir / "mail" / domain / local / "new"
    return len(list(new.iterdir())) if new.exists() else 0


def queue_cli(srv: Server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), "queue", *args, "--config", str(srv.config_path)],
        capture_output=True, text=True, timeout=60,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sink():
    sinks = []

    def _make(**kw) -> SmtpSink:
        s = SmtpSink(**kw)
        sinks.append(s)
        return s

    yield _make
    for s in sinks:
        s.stop()


@pytest.fixture
def smtp_sink():
    """Postfix's smtp-sink on a free port, dumping each message to a file. Missing
    smtp-sink skips the test, or fails it under CI or POSTERN_REQUIRE_PEERS (the CI
    script installs Postfix, so a skip there would hide lost coverage)."""
    if not SMTP_SINK.exists():
        if os.environ.get("CI") or os.environ.get("POSTERN_REQUIRE_PEERS"):
            pytest.fail(f"{SMTP_SINK} is missing (install postfix); CI/POSTERN_REQUIRE_PEERS requires it")
        pytest.skip("smtp-sink is not installed")
    procs = []
    dumps = []

    def _start(*options: str) -> tuple[int, Path]:
        port = free_port()
        # Outside tmp_path: smtp-sink runs as nobody, who cannot enter pytest's 0700 dirs.
        dump = Path(tempfile.mkdtemp(prefix="postern-smtp-sink-"))
        dumps.append(dump)
        os.chmod(dump, 0o777)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        p = subprocess.Popen(
            [str(SMTP_SINK), *user, "-d", f"{dump}/m.", *options, f"127.0.0.1:{port}", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        procs.append(p)
        wait_until(lambda: _listening(port), 10, "smtp-sink to listen")
        return port, dump

    yield _start
    for p in procs:
        p.terminate()
        p.wait(10)
    for d in dumps:
        shutil.rmtree(d, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# -- local delivery ---------------------------------------------------------------

def test_local_maildir_delivery(start):
    srv = start(extra=delivery())
    send(srv.port, "bob@client.test", ["alice@example.test"], "local-1",
         body="Hello Alice.\r\n.a line with a leading dot\r\n")
    send(srv.port, "", ["Postmaster"], "to-postmaster")
    send(srv.port, "bob@client.test", ['"../../etc/x"@example.test'], "odd-local-part")
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="alice's mail", srv=srv)
    box = maildir(srv, "alice@example.test")
    (msg,) = list(box)
    assert msg["Return-Path"] == "<bob@client.test>"
    assert msg["Delivered-To"] == "alice@example.test"
    assert msg["Subject"] == "local-1"
    assert "by mx.example.test (Postern)" in msg["Received"]
    assert msg.get_payload() == "Hello Alice.\n.a line with a leading dot\n"
    wait_until(lambda: maildir_count(srv, "postmaster@example.test") == 1, what="postmaster", srv=srv)
    (pm,) = list(maildir(srv, "postmaster@example.test"))
    assert pm["Return-Path"] == "<>" and pm["Delivered-To"] == "postmaster@example.test"
    # A hostile local part stays inside the mail root, encoded.
    odd = srv.data_dir / "mail" / "example.test" / "%2E.%2F..%2Fetc%2Fx"
    wait_until(lambda: (odd / "new").is_dir() and any((odd / "new").iterdir()), what="odd mailbox", srv=srv)
    assert sorted(p.name for p in (srv.data_dir / "mail").iterdir()) == ["example.test"]
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)


# -- relayhost -----------------------------------------------------------------

def test_relayhost_to_postfix_smtp_sink(start, smtp_sink):
    port, dump = smtp_sink()
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{port}"))
    for i in range(5):
        send(srv.port, "alice@example.test", [f"user{i}@remote.test", f"other{i}@else.test"], f"relay-{i}")
    # smtp-sink creates a dump file when a transaction starts and fills it as
    # the message arrives: wait until all five are complete, not just present.
    subjects = [f"Subject: relay-{i}\n".encode() for i in range(5)]  # dumped with LF

    def complete():
        dumped = [p.read_bytes() for p in dump.iterdir()]
        return dumped if all(any(sub in d for d in dumped) for sub in subjects) else None

    dumped = wait_until(complete, what="5 complete messages at smtp-sink", srv=srv)
    assert len(dumped) == 5
    for i in range(5):
        (d,) = [d for d in dumped if f"Subject: relay-{i}\n".encode() in d]  # dumped with LF
        # One transaction with both recipients, through the relayhost.
        assert f"user{i}@remote.test".encode() in d and f"other{i}@else.test".encode() in d
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    delivered = [r for r in srv.log_records() if r.get("message") == "delivered"]
    assert len(delivered) == 10 and all(r["dest"] == "relayhost" for r in delivered)


@pytest.mark.parametrize("pipelining", [True, False])
def test_content_goes_in_bdat_chunks_to_a_server_offering_chunking(start, sink, pipelining):
    """RFC 3030 on output: the message is sent in BDAT chunks (at most
    1 MiB each, the last with LAST), not dot-stuffed, and arrives
    byte-identical to what a DATA transfer gives; a refused LAST chunk
    fails the recipients with its reply."""
    chunked = sink(chunking=True, pipelining=pipelining,
                   data=lambda m: "554 5.6.0 refused" if "refuse" in m.subject else None)
    plain = sink(pipelining=pipelining)
    body = ".leading dot\r\n..two dots\r\n.\r\n" + ("x" * 998 + "\r\n") * 1100   # about 1.1 MB
    for s_, label in ((chunked, "chunked"), (plain, "plain")):
        srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s_.port}"))
        send(srv.port, "alice@example.test", ["bob@remote.test"], "big", body)
        wait_until(lambda: s_.count == 1, what=f"delivery to the {label} sink", srv=srv)
    (got,) = chunked.messages
    (ref,) = plain.messages
    assert got.chunks[0] == 1 << 20 and len(got.chunks) == 2 and sum(got.chunks) == len(got.data)
    assert ref.chunks == []
    body_of = lambda d: d[d.index(b"\r\n\r\n"):]   # noqa: E731 (Received and Message-ID differ)
    assert body_of(got.data) == body_of(ref.data) and len(body_of(got.data)) > 1 << 20
    assert b"\r\n.leading dot\r\n..two dots\r\n.\r\n" in got.data
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{chunked.port}"))
    send(srv.port, "alice@example.test", ["carol@remote.test"], "please refuse")
    rec = wait_until(lambda: next((r for r in srv.log_records() if r.get("message") == "failed"), None),
                     what="the refused delivery", srv=srv)
    assert "554 5.6.0 refused" in json.dumps(rec)


def test_relayhost_auth_only_over_tls(start, sink, tmp_path):
    ca, cert, key = make_certs(tmp_path / "certs", "smart.test")
    s = sink(tls_context=server_tls(cert, key), auth={"relayuser": "s3cret"})
    # The relayhost offers STARTTLS: AUTH goes over TLS.
    srv = start(plugins=[relay()], extra=delivery(
        relayhost=f"127.0.0.1:{s.port}", relayhost_username="relayuser", relayhost_password="s3cret"))
    send(srv.port, "alice@example.test", ["bob@remote.test"], "with-auth")
    wait_until(lambda: s.count == 1, what="authenticated delivery", srv=srv)
    assert s.messages[0].tls and s.messages[0].auth == "relayuser"
    assert "s3cret" not in "\n".join(srv.raw_log)
    # Without TLS the credentials are not sent: the message waits.
    plain = sink(auth={"relayuser": "s3cret"})
    srv2 = start(plugins=[relay()], extra=delivery(
        relayhost=f"127.0.0.1:{plain.port}", relayhost_username="relayuser", relayhost_password="s3cret"))
    send(srv2.port, "alice@example.test", ["bob@remote.test"], "no-tls-no-auth")
    srv2.wait_log(lambda r: r.get("message") == "deferred" and "without TLS" in r.get("reason", ""), 20)
    assert plain.count == 0


# -- MX -------------------------------------------------------------------------

def test_delivery_via_mx_from_dns_on_loopback(start, sink):
    s = sink()
    dns = DnsServer({
        # The preferred MX refuses connections (nothing listens on 127.0.0.2),
        # so delivery falls back to the next one.
        ("remote.test", "MX"): [(20, "mx2.remote.test"), (10, "mx1.remote.test")],
        ("mx1.remote.test", "A"): ["127.0.0.2"],
        ("mx2.remote.test", "A"): ["127.0.0.1"],
        # No MX: the implicit MX is the domain's own address (RFC 5321 §5.1).
        ("implicit.test", "A"): ["127.0.0.1"],
    })
    try:
        srv = start(plugins=[relay()], extra=dns.config() + delivery(smtp_port=s.port))
        send(srv.port, "alice@example.test", ["a@remote.test", "b@implicit.test"], "via-mx")
        wait_until(lambda: s.count == 2, what="both domains delivered", srv=srv)
        assert sorted(r for m in s.messages for r in m.rcpts) == ["a@remote.test", "b@implicit.test"]
        assert all(m.helo == "mx.example.test" for m in s.messages)
        assert ("remote.test", "MX") in dns.queries and ("mx1.remote.test", "A") in dns.queries
        assert ("implicit.test", "MX") in dns.queries and ("implicit.test", "A") in dns.queries
        tried = [r["host"] for r in srv.log_records() if r.get("message") == "host unusable"]
        assert tried == ["mx1.remote.test"]
        via = {r["to"]: r["detail"] for r in srv.log_records() if r.get("message") == "delivered"}
        assert via["a@remote.test"].startswith(f"relay=mx2.remote.test[127.0.0.1]:{s.port}, 250")
        assert via["b@implicit.test"].startswith("relay=implicit.test[127.0.0.1]")
        wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    finally:
        dns.stop()


def test_null_mx_bounces_to_the_local_sender(start):
    dns = DnsServer({("nullmx.test", "MX"): [(0, ".")]})
    try:
        srv = start(plugins=[relay()], extra=dns.config() + delivery())
        send(srv.port, "alice@example.test", ["x@nullmx.test"], "to-null-mx")
        wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="bounce", srv=srv)
        (dsn,) = list(maildir(srv, "alice@example.test"))
        status = report_fields(dsn)
        assert status["Status"] == "5.1.10" and status["Action"] == "failed"
        assert "null MX" in status["Diagnostic-Code"]
        wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    finally:
        dns.stop()


# -- retries and bounces ---------------------------------------------------------------

def test_4xx_is_retried_and_later_delivered(start, sink):
    tries = []

    def rcpt(addr):
        tries.append(time.time())
        return "451 4.3.0 try again later" if len(tries) == 1 else None

    s = sink(rcpt=rcpt)
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    send(srv.port, "alice@example.test", ["later@remote.test"], "retry-me")
    wait_until(lambda: s.count == 1, what="delivery on retry", srv=srv)
    assert len(tries) == 2 and tries[1] - tries[0] >= 0.9
    deferred = srv.wait_log(lambda r: r.get("message") == "deferred")
    assert deferred["status"] == "4.3.0" and "451 4.3.0 try again later" in deferred["reason"]
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    assert maildir_count(srv, "alice@example.test") == 0  # no bounce


def report_fields(dsn) -> dict:
    """The per-recipient fields of a DSN's message/delivery-status part."""
    msg = email.message_from_bytes(dsn.as_bytes(), policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    groups = parts[1].get_payload()
    fields = dict(groups[0].items())
    fields.update(groups[1].items())
    fields["_headers"] = parts[2].get_payload()
    fields["_groups"] = len(groups)
    return fields


def test_5xx_bounces_to_the_senders_local_maildir(start, sink):
    s = sink(rcpt=lambda a: "550 5.1.1 <nobody@remote.test>: no such user" if a.startswith("nobody") else None)
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    send(srv.port, "alice@example.test", ["nobody@remote.test", "someone@remote.test"], "bounce-me")
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="the bounce", srv=srv)
    assert s.count == 1 and s.messages[0].rcpts == ["someone@remote.test"]
    (dsn,) = list(maildir(srv, "alice@example.test"))
    assert dsn["Return-Path"] == "<>"
    assert dsn["From"].startswith("Mail Delivery System <MAILER-DAEMON@mx.example.test>")
    assert dsn["Auto-Submitted"] == "auto-replied"
    f = report_fields(dsn)
    assert f["_groups"] == 2  # the delivered recipient is not reported
    assert f["Reporting-MTA"] == "dns; mx.example.test"
    assert "Arrival-Date" in f
    assert f["Final-Recipient"] == "rfc822; nobody@remote.test"
    assert (f["Action"], f["Status"]) == ("failed", "5.1.1")
    assert f["Diagnostic-Code"] == "smtp; 550 5.1.1 <nobody@remote.test>: no such user"
    assert f["Remote-MTA"] == "dns; 127.0.0.1"
    assert "Subject: bounce-me" in f["_headers"]
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)

    # The null sender is never bounced.
    send(srv.port, "", ["nobody@remote.test"], "null-sender")
    srv.wait_log(lambda r: r.get("message") == "failed" and r.get("to") == "nobody@remote.test"
                 and r["queue_id"] != f.get("X-Postern-Queue-ID"), 20)
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    time.sleep(0.5)
    assert maildir_count(srv, "alice@example.test") == 1
    bounces = [r for r in srv.log_records() if r.get("message") == "bounce queued"]
    assert len(bounces) == 1


def test_expiry_bounces_with_the_last_error(start, sink):
    s = sink(rcpt=lambda a: "452 4.2.2 mailbox full")
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}", max_age="3s"))
    send(srv.port, "alice@example.test", ["full@remote.test"], "expire-me")
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, timeout=30, what="expiry bounce", srv=srv)
    f = report_fields(next(iter(maildir(srv, "alice@example.test"))))
    assert (f["Action"], f["Status"]) == ("failed", "4.4.7")
    assert "delivery time expired" in f["Diagnostic-Code"] and "452 4.2.2 mailbox full" in f["Diagnostic-Code"]
    assert len(s.rcpt_attempts) >= 2
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)


# -- STARTTLS ----------------------------------------------------------------------

def test_starttls_required_verifies_the_mx_certificate(start, sink, tmp_path):
    ca, cert, key = make_certs(tmp_path / "good", "mx.tls.test")
    other_ca, _, _ = make_certs(tmp_path / "other", "mx.tls.test", ca_name="Some Other CA")
    s = sink(tls_context=server_tls(cert, key))
    dns = DnsServer({("tls.test", "MX"): [(10, "mx.tls.test")], ("mx.tls.test", "A"): ["127.0.0.1"]})
    try:
        srv = start(plugins=[relay()], extra=dns.config() + delivery(
            smtp_port=s.port, tls="required", tls_ca_file=str(ca)))
        send(srv.port, "alice@example.test", ["u@tls.test"], "over-tls")
        wait_until(lambda: s.count == 1, what="TLS delivery", srv=srv)
        assert s.messages[0].tls
        wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)

        # A certificate from a CA we do not trust: not delivered, kept, explained.
        srv2 = start(plugins=[relay()], extra=dns.config() + delivery(
            smtp_port=s.port, tls="required", tls_ca_file=str(other_ca), retry_intervals=["1h"]))
        send(srv2.port, "alice@example.test", ["v@tls.test"], "untrusted")
        rec = srv2.wait_log(lambda r: r.get("message") == "deferred", 20)
        assert rec["status"] == "4.7.5" and "certificate" in rec["reason"].lower()
        assert s.count == 1 and len(srv2.queued()) == 1
        listing = queue_cli(srv2, "list")
        assert listing.returncode == 0, listing.stderr
        assert "deferred" in listing.stdout and "TLS" in listing.stdout

        # Opportunistic TLS encrypts without checking the certificate.
        srv3 = start(plugins=[relay()], extra=dns.config() + delivery(smtp_port=s.port))
        send(srv3.port, "alice@example.test", ["w@tls.test"], "opportunistic")
        wait_until(lambda: s.count == 2, what="opportunistic TLS delivery", srv=srv3)
        assert s.messages[1].tls
    finally:
        dns.stop()


def test_required_tls_without_starttls_defers(start, sink):
    s = sink()  # no STARTTLS
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}", tls="required",
                                                  retry_intervals=["1h"]))
    send(srv.port, "alice@example.test", ["u@remote.test"], "needs-tls")
    rec = srv.wait_log(lambda r: r.get("message") == "deferred", 20)
    assert rec["status"] == "4.7.4" and s.count == 0


def test_relayhost_that_is_this_server_is_a_loop_not_a_delivery(start):
    """A relayhost (or MX) that turns out to be this server greets with our own
    hostname: the client refuses to send (4.4.6 "loops back to myself")
    instead of queueing the message into itself again and again."""
    port = free_port()
    srv = start(plugins=[relay()], listen=[f"127.0.0.1:{port}"],
                extra=delivery(relayhost=f"127.0.0.1:{port}", retry_intervals=["1h"]))
    send(srv.port, "alice@example.test", ["u@remote.test"], "loop")
    rec = srv.wait_log(lambda r: r.get("message") == "deferred", 20)
    assert rec["status"] == "4.4.6", rec
    assert "loops back to myself: the server greets as mx.example.test" in rec["reason"]
    # Only the original is queued: the server never accepted a copy from itself.
    time.sleep(0.5)
    assert len(srv.queued()) == 1
    assert not [r for r in srv.logs if r.get("message") == "message queued"
                and r.get("from") == "alice@example.test"][1:]


def test_sigterm_lets_a_delivery_in_flight_finish(start, sink):
    in_data = threading.Event()

    def slow(received):
        in_data.set()
        time.sleep(1.5)
        return None  # then accept

    s = sink(data=slow)
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    send(srv.port, "alice@example.test", ["slow@remote.test"], "in-flight")
    assert in_data.wait(20)
    assert srv.stop() == 0  # SIGTERM while the remote has not answered "." yet
    assert s.count == 1
    assert queue_empty(srv)
    assert not [r for r in srv.log_records() if "still in progress" in r.get("message", "")]


def test_starttls_required_refuses_a_certificate_for_another_name(start, sink, tmp_path):
    # Signed by a CA we trust, but issued to another name than the MX host's.
    ca, cert, key = make_certs(tmp_path / "certs", "elsewhere.test")
    s = sink(tls_context=server_tls(cert, key))
    dns = DnsServer({("tls.test", "MX"): [(10, "mx.tls.test")], ("mx.tls.test", "A"): ["127.0.0.1"]})
    try:
        srv = start(plugins=[relay()], extra=dns.config() + delivery(
            smtp_port=s.port, tls="required", tls_ca_file=str(ca), retry_intervals=["1h"]))
        send(srv.port, "alice@example.test", ["u@tls.test"], "wrong-name")
        rec = srv.wait_log(lambda r: r.get("message") == "deferred", 20)
        assert rec["status"] == "4.7.5" and "certificate" in rec["reason"].lower(), rec
        assert s.count == 0 and s.starttls >= 1
        assert len(srv.queued()) == 1
        assert not [r for r in srv.log_records() if r.get("message") == "delivered"]
    finally:
        dns.stop()


def test_tls_none_does_not_use_offered_starttls(start, sink, tmp_path):
    _, cert, key = make_certs(tmp_path / "certs", "smart.test")
    s = sink(tls_context=server_tls(cert, key))  # offers STARTTLS
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}", tls="none"))
    send(srv.port, "alice@example.test", ["u@remote.test"], "plain-text")
    wait_until(lambda: s.count == 1, what="plain-text delivery", srv=srv)
    assert not s.messages[0].tls and s.starttls == 0
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)


def test_aaaa_only_implicit_mx_is_reached_over_ipv6(start, sink):
    """No MX and no A record, only AAAA ::1: the implicit MX (RFC 5321 §5.1) is
    the domain's IPv6 address."""
    try:
        s = sink(host="::1")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    dns = DnsServer({("v6only.test", "AAAA"): ["::1"]})
    try:
        srv = start(plugins=[relay()], extra=dns.config() + delivery(smtp_port=s.port))
        send(srv.port, "alice@example.test", ["u@v6only.test"], "over-ipv6")
        wait_until(lambda: s.count == 1, what="delivery over IPv6", srv=srv)
        assert ("v6only.test", "MX") in dns.queries and ("v6only.test", "AAAA") in dns.queries
        (rec,) = [r for r in srv.log_records() if r.get("message") == "delivered"]
        assert rec["detail"].startswith(f"relay=v6only.test[::1]:{s.port}, 250"), rec
        wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    finally:
        dns.stop()


# -- concurrency and connection reuse --------------------------------------------

@pytest.mark.parametrize("route", ["relayhost", "mx"])
def test_connections_are_reused_within_the_per_destination_limit(start, sink, route, capsys):
    """40 messages for one destination with max_per_destination = 2: never more
    than 2 connections at once, far fewer sessions than messages, nothing lost."""
    n = 40
    gate = threading.Event()  # held greetings: the whole batch is queued first
    s = sink(gate=gate)
    dns = None
    if route == "relayhost":
        extra = delivery(relayhost=f"127.0.0.1:{s.port}", max_per_destination=2)
    else:
        dns = DnsServer({("many.test", "MX"): [(10, "mx.many.test")], ("mx.many.test", "A"): ["127.0.0.1"]})
        extra = dns.config() + delivery(smtp_port=s.port, max_per_destination=2)
    try:
        srv = start(plugins=[relay()], extra=extra)
        subjects = [f"reuse-{route}-{i:02d}" for i in range(n)]
        submit(srv.port, subjects, "rcpt@many.test")
        time.sleep(0.3)  # let the workers connect and wait at the gate
        gate.set()
        wait_until(lambda: s.count >= n, what=f"{n} messages at the sink", srv=srv)
        wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
        assert sorted(s.subjects()) == sorted(subjects)
        assert 1 <= s.peak <= 2, s.peak
        assert s.sessions < n, s.sessions
        with capsys.disabled():
            print(f"\n[reuse/{route}] {n} messages: {s.sessions} sessions, peak {s.peak} concurrent")
    finally:
        if dns:
            dns.stop()


@pytest.mark.parametrize("hangup", ["close", "421"])
def test_reused_connection_closed_by_the_remote_is_retried_on_a_fresh_one(start, sink, hangup):
    """The remote hangs up after 3 messages per session (at once, or with a 421
    to the next command): the next message goes over a new connection in the
    same attempt instead of being deferred."""
    n = 10
    gate = threading.Event()
    reply = "421 4.4.2 sink.test closing: idle time-out" if hangup == "421" else None
    s = sink(gate=gate, session_limit=3, limit_reply=reply)
    srv = start(plugins=[relay()], extra=delivery(
        relayhost=f"127.0.0.1:{s.port}", max_per_destination=1, retry_intervals=["1h"]))
    subjects = [f"hangup-{hangup}-{i}" for i in range(n)]
    submit(srv.port, subjects, "rcpt@remote.test")
    gate.set()
    wait_until(lambda: s.count >= n, what=f"{n} messages at the sink", srv=srv)
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    assert sorted(s.subjects()) == sorted(subjects)
    assert s.sessions >= 4
    assert not [r for r in srv.log_records() if r.get("message") == "deferred"]
    retried = [r for r in srv.log_records() if "retrying on a new connection" in r.get("message", "")]
    assert retried, "no retry on a fresh connection was logged"


# -- queue commands --------------------------------------------------------------

def test_queue_list_show_flush_delete_online_and_offline(start, sink):
    state = {"accept": False}
    s = sink(rcpt=lambda a: None if state["accept"] else "451 4.7.1 greylisted, come back later")
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}", retry_intervals=["1h"]))
    send(srv.port, "alice@example.test", ["grey@remote.test"], "queued-one")
    srv.wait_log(lambda r: r.get("message") == "deferred", 20)
    (qid,) = srv.queued()

    listing = queue_cli(srv, "list")
    assert listing.returncode == 0, listing.stderr
    out = listing.stdout
    assert qid in out and "deferred" in out and "alice@example.test" in out
    assert "451 4.7.1 greylisted" in out and "grey@remote.test (pending)" in out
    assert "-- 1 message" in out
    as_json = json.loads(queue_cli(srv, "list", "--json").stdout)
    (entry,) = as_json["messages"]
    assert entry["id"] == qid and entry["attempts"] == 1 and entry["recipients"][0]["status"] == "pending"

    shown = queue_cli(srv, "show", qid)
    assert shown.returncode == 0, shown.stderr
    assert "recipient: grey@remote.test pending" in shown.stdout
    assert "Subject: queued-one" in shown.stdout and "sender:    <alice@example.test>" in shown.stdout
    missing = queue_cli(srv, "show", "0" * 20)
    assert missing.returncode == 1 and "no queued message" in missing.stderr
    assert queue_cli(srv, "show", "../etc").returncode != 0

    # flush: retry now (the next attempt would be an hour away).
    state["accept"] = True
    flushed = queue_cli(srv, "flush")
    assert flushed.returncode == 0 and "flushed: 1" in flushed.stdout
    wait_until(lambda: s.count == 1, what="delivery after flush", srv=srv)
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    assert "queue is empty" in queue_cli(srv, "list").stdout

    # delete: gone without delivery or bounce.
    state["accept"] = False
    send(srv.port, "alice@example.test", ["grey2@remote.test"], "delete-me")
    wait_until(lambda: len([r for r in srv.log_records() if r.get("message") == "deferred"]) >= 2, srv=srv)
    (qid2,) = srv.queued()
    deleted = queue_cli(srv, "delete", qid2)
    assert deleted.returncode == 0 and f"deleted {qid2}" in deleted.stdout
    wait_until(lambda: queue_empty(srv), what="deleted message gone", srv=srv)

    # Offline: the server is stopped; the commands read the spool itself.
    send(srv.port, "alice@example.test", ["grey3@remote.test"], "offline")
    wait_until(lambda: len([r for r in srv.log_records() if r.get("message") == "deferred"]) >= 3, srv=srv)
    (qid3,) = srv.queued()
    assert srv.stop() == 0
    offline = queue_cli(srv, "list")
    assert offline.returncode == 0, offline.stderr
    assert "no server running" in offline.stdout and qid3 in offline.stdout and "greylisted" in offline.stdout
    assert "Subject: offline" in queue_cli(srv, "show", qid3).stdout
    assert "1 messages will be retried" in queue_cli(srv, "flush").stdout
    assert queue_cli(srv, "delete", qid3).returncode == 0
    assert "queue is empty" in queue_cli(srv, "list").stdout
    assert queue_empty(srv)


def test_queue_commands_never_create_a_spool_elsewhere(start, sink, tmp_path):
    """`postern queue list` pointed at a data directory the server does not
    use (a server started with --data-dir, queried without it) reports that
    no spool is there, instead of creating an empty one and answering "queue
    is empty"; with the server's own data directory it lists the mail."""
    s = sink(rcpt=lambda a: "451 4.7.1 greylisted, come back later")
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}", retry_intervals=["1h"]))
    send(srv.port, "alice@example.test", ["grey@remote.test"], "held")
    srv.wait_log(lambda r: r.get("message") == "deferred", 20)
    (qid,) = srv.queued()
    elsewhere = tmp_path / "elsewhere"
    wrong = queue_cli(srv, "list", "--data-dir", str(elsewhere))
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert f"no spool at {elsewhere}/spool" in wrong.stderr and "--data-dir" in wrong.stderr, wrong.stderr
    assert "queue is empty" not in wrong.stdout
    assert not (elsewhere / "spool").exists(), "the command created a spool"
    right = queue_cli(srv, "list", "--data-dir", str(srv.data_dir))
    assert right.returncode == 0 and qid in right.stdout, right.stdout + right.stderr


# -- crash safety and throughput ---------------------------------------------------------

def submit(port: int, subjects: list[str], rcpt: str, threads: int = 4) -> None:
    """Send one message per subject over a few connections in parallel."""
    def worker(chunk):
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            for subject in chunk:
                body = (f"From: <alice@example.test>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n\r\n"
                        + "x" * 60 + "\r\n") * 1
                s.sendmail("alice@example.test", [rcpt], body.encode())

    chunks = [subjects[i::threads] for i in range(threads)]
    ts = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def test_kill9_during_delivery_loses_nothing(tmp_path, sink, capsys):
    gate = threading.Event()
    killed = threading.Event()
    box = {}

    def data(received):
        # Kill Postern when the 150th message's content has arrived, before the
        # sink answers 250: that one is delivered but never acknowledged, so it
        # must come again after the restart (at-least-once), never go missing.
        if len(box["sink"].messages) + 1 >= 150 and not killed.is_set():
            killed.set()
            os.kill(box["srv"].proc.pid, signal.SIGKILL)
        return None

    s = box["sink"] = sink(gate=gate, data=data)
    srv = box["srv"] = Server(tmp_path / "crash", plugins=[relay()],
                              extra=delivery(relayhost=f"127.0.0.1:{s.port}", max_per_destination=5))
    srv.start()
    subjects = [f"crash-{i:04d}" for i in range(1000)]
    try:
        submit(srv.port, subjects, "sink@remote.test")
        assert len(srv.queued()) == 1000 and s.count == 0
        gate.set()  # the sink starts answering: deliveries flow
        assert killed.wait(120), "deliveries did not reach 150"
        srv.kill9()
        # The sink thread records the 150th message just after the kill: wait for it.
        wait_until(lambda: s.count >= 150, 10, "the 150th message at the sink")
        at_kill = s.count
        assert 150 <= at_kill <= 999, at_kill
        left = len(srv.queued())
        again = Server(tmp_path / "crash", plugins=[relay()],
                       extra=delivery(relayhost=f"127.0.0.1:{s.port}", max_per_destination=5))
        again.start()
        try:
            wait_until(lambda: queue_empty(again), timeout=180, what="queue drained after restart", srv=again)
            got = s.subjects()
            missing = set(subjects) - set(got)
            assert not missing, f"{len(missing)} messages lost, e.g. {sorted(missing)[:5]}"
            duplicates = len(got) - len(set(got))
            assert duplicates >= 1  # the unacknowledged one came again
            with capsys.disabled():
                print(f"\n[crash test] 1000 submitted; kill -9 with {at_kill} at the sink "
                      f"({left} still queued); after restart {len(got)} deliveries at the sink: "
                      f"{len(set(got))} distinct, {duplicates} duplicates, 0 lost")
        finally:
            again.stop()
    finally:
        srv.kill9()


def test_delivery_throughput_to_a_local_sink(tmp_path, smtp_sink, capsys, monkeypatch):
    """Not a timed assertion: prints messages/s delivered to Postfix's smtp-sink
    on loopback (queue filled with delivery on hold, then released by reload)."""
    # One log line per delivery would measure the test's log reader instead.
    monkeypatch.setenv("POSTERN_TEST_LOG", "info,postern_delivery=warn")
    n = 2000
    port, dump = smtp_sink()
    hold = delivery(relayhost=f"127.0.0.1:{port}", enabled=False)
    srv = Server(tmp_path / "tp", plugins=[relay()], extra=hold)
    srv.start()
    try:
        submit(srv.port, [f"tp-{i}" for i in range(n)], "sink@remote.test")
        assert len(srv.queued()) == n
        srv.write_config([relay()], extra=delivery(relayhost=f"127.0.0.1:{port}"))
        started = time.time()
        assert srv.admin("reload").returncode == 0
        wait_until(lambda: queue_empty(srv), timeout=300, what="queue drained", srv=srv)
        smtp_rate = n / (time.time() - started)
        wait_until(lambda: len(list(dump.iterdir())) >= n, timeout=30, what="dump files")

        # The same for local Maildir delivery.
        srv.write_config([relay()], extra=hold)
        assert srv.admin("reload").returncode == 0
        submit(srv.port, [f"tp-local-{i}" for i in range(n)], "alice@example.test")
        srv.write_config([relay()], extra=delivery(relayhost=f"127.0.0.1:{port}"))
        started = time.time()
        assert srv.admin("reload").returncode == 0
        wait_until(lambda: queue_empty(srv), timeout=300, what="queue drained", srv=srv)
        local_rate = n / (time.time() - started)
        assert maildir_count(srv, "alice@example.test") == n
        with capsys.disabled():
            print(f"\n[throughput] {n} messages: {smtp_rate:.0f} msg/s to smtp-sink over SMTP "
                  f"(relayhost, 5 connections), {local_rate:.0f} msg/s to a local Maildir")
    finally:
        srv.stop()
