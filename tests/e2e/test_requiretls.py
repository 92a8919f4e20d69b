"""REQUIRETLS (RFC 8689) through the real server: offered after STARTTLS
only, refused (555) without TLS, kept with the envelope; on the way out a
REQUIRETLS message goes only over TLS with a verified certificate to a hop
that offers REQUIRETLS (the parameter passed on), else it is bounced with
5.7.10, and that bounce returns headers only."""

from __future__ import annotations

import smtplib

from harness import Raw
from sinks import make_certs, server_tls
from test_delivery import (delivery, maildir, maildir_count, queue_empty, relay, report_fields,
                           sink, wait_until)  # noqa: F401 (sink is a fixture)
from test_tls_auth import certs, ctx, tls_extra


def test_offered_and_accepted_only_over_tls(start, tmp_path):
    srv = start(extra=tls_extra(certs(tmp_path)))
    c = Raw(srv.port)
    assert c.reply()[0] == 220
    code, text = c.cmd("EHLO client.test")
    assert code == 250 and "REQUIRETLS" not in text and "STARTTLS" in text
    assert c.cmd("MAIL FROM:<a@client.test> REQUIRETLS")[0] == 555
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        s.ehlo("client.test")
        s.starttls(context=ctx())
        s.ehlo("client.test")
        assert s.has_extn("requiretls")
        assert s.mail("a@client.test", ["REQUIRETLS=yes"])[0] == 501
        s.rset()
        assert s.mail("a@client.test", ["REQUIRETLS"])[0] == 250
        assert s.rcpt("bob@example.test")[0] == 250
        code, text = s.data(b"Subject: kept\r\n\r\nhi\r\n")
        assert code == 250
    env, _ = srv.read_queued(text.decode().rsplit(" ", 1)[1])
    assert env["mail_params"] == ["REQUIRETLS"] and env["tls"]


def send_requiretls(port, subject, rcpt):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.starttls(context=ctx())
        s.ehlo("client.test")
        s.sendmail("alice@example.test", [rcpt],
                   f"From: <alice@example.test>\r\nSubject: {subject}\r\n\r\nsecret\r\n".encode(),
                   mail_options=["REQUIRETLS"])


def test_sent_only_over_verified_tls_to_a_hop_offering_it(start, sink, tmp_path):
    ca, cert, key = make_certs(tmp_path / "mx", "localhost")
    good = sink(tls_context=server_tls(cert, key), requiretls=True)
    srv = start(plugins=[relay()], extra=tls_extra(certs(tmp_path)) + delivery(
        relayhost=f"localhost:{good.port}", tls="required", tls_ca_file=str(ca)))
    send_requiretls(srv.port, "verified", "bob@remote.test")
    wait_until(lambda: good.count == 1, what="delivery over verified TLS", srv=srv)
    assert good.messages[0].tls and good.messages[0].mail_args.split()[-1] == "REQUIRETLS"


def test_bounced_with_5_7_10_otherwise(start, sink, tmp_path):
    plain = sink()  # no STARTTLS, no REQUIRETLS
    srv = start(plugins=[relay()], extra=tls_extra(certs(tmp_path)) + delivery(
        relayhost=f"127.0.0.1:{plain.port}"))
    send_requiretls(srv.port, "must-not-leak", "bob@remote.test")
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="the bounce", srv=srv)
    assert plain.count == 0
    (dsn,) = list(maildir(srv, "alice@example.test"))
    f = report_fields(dsn)  # also asserts the headers-only third part
    assert (f["Action"], f["Status"]) == ("failed", "5.7.10")
    assert "REQUIRETLS support required" in f["Diagnostic-Code"]
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
