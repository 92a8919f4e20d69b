"""8BITMIME and SMTPUTF8 towards a next hop that does not offer them (issue 15,
RFC 6152 §3, RFC 6531 §3.2), through the real server to a Python sink:

- an 8-bit text/plain message sent with BODY=8BITMIME reaches a hop without
  8BITMIME as 7 bit, quoted-printable, decoding back to the original text, and
  without BODY=8BITMIME on MAIL FROM; a hop that offers 8BITMIME gets the
  message byte for byte;
- an 8-bit header without SMTPUTF8 cannot be downgraded: bounced with 5.6.3;
- an SMTPUTF8 message with UTF-8 header fields bounces with 5.6.7 at a hop
  without SMTPUTF8; an all-ASCII one goes there without the parameter, and a
  hop that offers SMTPUTF8 gets it and the headers as they are.

The same against a real Postfix (smtpd_discard_ehlo_keywords) is in
test_postfix_peer.py."""

from __future__ import annotations

import email
import email.policy
import quopri
import smtplib
import time

from test_delivery import (delivery, maildir, maildir_count, queue_empty, relay, report_fields,
                           sink, wait_until)  # noqa: F401 (sink is a fixture)

TEXT = "Grüße aus Köln — naïve café, 100 € = ok.\r\n.leading dot\r\n" + "é" * 120 + "\r\n"


def message(sender: str, rcpt: str, subject: str, body: str = TEXT, extra: str = "") -> bytes:
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@client.test>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n{extra}"
            f"\r\n{body}").encode()


def submit(port: int, sender: str, rcpt: str, msg: bytes, options=("BODY=8BITMIME",)) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        s.sendmail(sender, [rcpt], msg, mail_options=list(options))


def bounce_status(srv, sender: str) -> dict:
    wait_until(lambda: maildir_count(srv, sender) == 1, 30, "the bounce", srv)
    (dsn,) = list(maildir(srv, sender))
    return report_fields(dsn)


def test_8bit_body_is_converted_for_a_hop_without_8bitmime(start, sink):
    s = sink(eightbitmime=False)
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    submit(srv.port, "alice@example.test", "bob@remote.test", message("alice@example.test", "bob@remote.test", "qp"))
    wait_until(lambda: s.count == 1, 30, "the message at the sink", srv)
    got = s.messages[0]
    assert "BODY=8BITMIME" not in got.mail_args.upper(), got.mail_args
    assert got.data.isascii()
    lines = got.data.split(b"\r\n")
    assert all(len(line) <= 998 for line in lines)
    head, body = got.data.split(b"\r\n\r\n", 1)
    assert b"\nContent-Transfer-Encoding: quoted-printable\r\n" in head + b"\r\n", head
    assert b"Content-Transfer-Encoding: 8bit" not in head
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    assert b"\n" not in body.replace(b"\r\n", b"")  # CRLF only
    assert quopri.decodestring(body).decode() == TEXT
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert msg.get_content().replace("\r\n", "\n") == TEXT.replace("\r\n", "\n")
    assert msg["Subject"] == "qp"
    rec = srv.wait_log(lambda r: r.get("message", "").startswith("converted to 7 bit"))
    assert rec["original"] < rec["size"], rec
    wait_until(lambda: queue_empty(srv), 30, "an empty queue", srv)


def test_8bit_body_goes_as_it_is_to_a_hop_with_8bitmime(start, sink):
    s = sink()
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    msg = message("alice@example.test", "bob@remote.test", "as-is")
    submit(srv.port, "alice@example.test", "bob@remote.test", msg)
    wait_until(lambda: s.count == 1, 30, "the message at the sink", srv)
    got = s.messages[0]
    assert "BODY=8BITMIME" in got.mail_args.upper()
    assert got.data.endswith(msg.split(b"\r\n\r\n", 1)[1])
    assert TEXT.encode() in got.data


def test_8bit_header_without_smtputf8_bounces_with_5_6_3(start, sink):
    s = sink(eightbitmime=False)
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    msg = message("alice@example.test", "bob@remote.test", "raw-header", extra="X-Note: Grüße\r\n")
    submit(srv.port, "alice@example.test", "bob@remote.test", msg)
    f = bounce_status(srv, "alice@example.test")
    assert f["Status"] == "5.6.3" and f["Action"] == "failed", f
    assert "8BITMIME" in f.get("Diagnostic-Code", ""), f
    assert s.count == 0


def test_smtputf8_headers_bounce_with_5_6_7_at_a_hop_without_smtputf8(start, sink):
    s = sink()  # 8BITMIME, no SMTPUTF8
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    msg = message("alice@example.test", "bob@remote.test", "Grüße", body="hi\r\n")
    submit(srv.port, "alice@example.test", "bob@remote.test", msg, options=("SMTPUTF8", "BODY=8BITMIME"))
    f = bounce_status(srv, "alice@example.test")
    assert f["Status"] == "5.6.7" and f["Action"] == "failed", f
    assert "SMTPUTF8" in f.get("Diagnostic-Code", ""), f
    rec = srv.wait_log(lambda r: r.get("message") == "failed" and r.get("to") == "bob@remote.test")
    assert rec["status"] == "5.6.7", rec
    assert s.count == 0 and s.rcpt_attempts == []


def test_smtputf8_all_ascii_goes_without_it_and_is_passed_on_when_offered(start, sink):
    plain, utf8 = sink(), sink(smtputf8=True)
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{plain.port}"))
    ascii_msg = message("alice@example.test", "bob@remote.test", "ascii", body="hi\r\n")
    submit(srv.port, "alice@example.test", "bob@remote.test", ascii_msg, options=("SMTPUTF8",))
    wait_until(lambda: plain.count == 1, 30, "the ASCII message", srv)
    assert "SMTPUTF8" not in plain.messages[0].mail_args.upper()

    srv2 = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{utf8.port}"))
    msg = message("alice@example.test", "bob@remote.test", "Grüße", body="hi\r\n")
    submit(srv2.port, "alice@example.test", "bob@remote.test", msg, options=("SMTPUTF8", "BODY=8BITMIME"))
    wait_until(lambda: utf8.count == 1, 30, "the UTF-8 message", srv2)
    got = utf8.messages[0]
    assert "SMTPUTF8" in got.mail_args.upper() and "BODY=8BITMIME" in got.mail_args.upper()
    assert "Subject: Grüße\r\n".encode() in got.data
