"""Delivery status notifications (RFC 3461/3464) through the real server:
DSN is offered, its parameters are checked (501 for a bad value) and kept
with the envelope, handed to a next hop that offers DSN, and honoured when
Postern reports itself — success notices for NOTIFY=SUCCESS (`delivered`
into a Maildir, `relayed` to a hop without DSN), delay notices for
NOTIFY=DELAY past `delay_warning`, nothing for NOTIFY=NEVER, and the whole
message returned for RET=FULL. Each report is parsed as RFC 3464."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time

from harness import Raw
from test_delivery import (delivery, maildir, maildir_count, queue_empty, relay, report_fields,
                           sink, wait_until)  # noqa: F401 (sink is a fixture)


def submit(srv, sender, rcpts, subject, mail_options=(), rcpt_options=(), body="Hello.\r\n"):
    msg = (f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject}.{time.time_ns()}@client.test>\r\n\r\n{body}").encode()
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
        s.ehlo("client.test")
        assert s.has_extn("dsn")
        s.sendmail(sender, rcpts, msg, mail_options=list(mail_options), rcpt_options=list(rcpt_options))


def reports(srv, address):
    return [m for m in maildir(srv, address)]


def test_dsn_is_offered_and_bad_values_get_501(start):
    srv = start()
    c = Raw(srv.port)
    assert c.reply()[0] == 220
    code, text = c.cmd("EHLO client.test")
    assert code == 250 and "DSN" in text, text
    for bad in ["RET=ALL", "ENVID=a+zz"]:
        assert c.cmd(f"MAIL FROM:<a@client.test> {bad}")[0] == 501, bad
    assert c.cmd("MAIL FROM:<a@client.test> RET=HDRS ENVID=QQ314159")[0] == 250
    for bad in ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "ORCPT=bob@example.test"]:
        assert c.cmd(f"RCPT TO:<bob@example.test> {bad}")[0] == 501, bad
    assert c.cmd("RCPT TO:<bob@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Bob+2B1@example.test")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: kept\r\n\r\nhi\r\n.\r\n")
    code, text = c.reply()
    assert code == 250, text
    env, _ = srv.read_queued(text.rsplit(" ", 1)[1])
    assert env["mail_params"] == ["RET=HDRS", "ENVID=QQ314159"]
    assert env["recipients"][0]["params"] == ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;Bob+2B1@example.test"]


def test_success_notice_for_a_local_delivery(start):
    srv = start(extra=delivery())
    submit(srv, "alice@example.test", ["bob@example.test", "carol@example.test"], "hello-success",
           mail_options=["ENVID=env+2B42"],
           rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;Bob+2B1@example.test"])
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="the success notice", srv=srv)
    (dsn,) = reports(srv, "alice@example.test")
    assert dsn["Return-Path"] == "<>"
    assert dsn["Subject"] == "Successful Mail Delivery Report"
    f = report_fields(dsn)
    assert f["_groups"] == 3  # per-message fields and both recipients
    assert f["Original-Envelope-Id"] == "env+42"
    assert (f["Action"], f["Status"]) == ("delivered", "2.0.0")
    assert "Subject: hello-success" in f["_headers"]
    msg = email.message_from_bytes(dsn.as_bytes(), policy=email.policy.compat32)
    groups = msg.get_payload()[1].get_payload()
    bob = dict(groups[1].items())
    assert bob["Final-Recipient"] == "rfc822; bob@example.test"
    assert bob["Original-Recipient"] == "rfc822; Bob+1@example.test"
    assert maildir_count(srv, "bob@example.test") == 1
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)


def test_dsn_parameters_go_to_a_next_hop_that_offers_dsn_and_it_reports(start, sink):
    s = sink(dsn=True)
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    submit(srv, "alice@example.test", ["bob@remote.test"], "handed-on",
           mail_options=["RET=HDRS", "ENVID=QQ1"],
           rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@remote.test"])
    wait_until(lambda: s.count == 1, what="relay", srv=srv)
    args = s.messages[0].mail_args.split()
    assert args[0].startswith("SIZE=") and args[1:] == ["RET=HDRS", "ENVID=QQ1"], args
    assert s.rcpt_lines == ["TO:<bob@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@remote.test"]
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    time.sleep(0.3)
    assert maildir_count(srv, "alice@example.test") == 0, "the next hop took the success notice over"


def test_relayed_notice_when_the_next_hop_has_no_dsn(start, sink):
    s = sink()
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    submit(srv, "alice@example.test", ["bob@remote.test"], "relayed", rcpt_options=["NOTIFY=SUCCESS"])
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="the relayed notice", srv=srv)
    assert s.rcpt_lines == ["TO:<bob@remote.test>"]  # parameters not sent to a hop without DSN
    f = report_fields(reports(srv, "alice@example.test")[0])
    assert (f["Action"], f["Status"]) == ("relayed", "2.0.0")


def test_notify_never_suppresses_the_bounce_and_ret_full_returns_the_message(start, sink):
    s = sink(rcpt=lambda a: "550 5.1.1 no such user")
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    submit(srv, "alice@example.test", ["quiet@remote.test"], "never", rcpt_options=["NOTIFY=NEVER"])
    srv.wait_log(lambda r: r.get("message") == "failed" and r.get("to") == "quiet@remote.test")
    submit(srv, "alice@example.test", ["gone@remote.test"], "full-return", mail_options=["RET=FULL"],
           body="the whole body comes back\r\n")
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="the bounce", srv=srv)
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    time.sleep(0.3)
    (dsn,) = reports(srv, "alice@example.test")
    msg = email.message_from_bytes(dsn.as_bytes(), policy=email.policy.compat32)
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "message/rfc822"]
    returned = parts[2].get_payload()[0]
    assert returned["Subject"] == "full-return"
    assert "the whole body comes back" in returned.get_payload()
    fields = dict(parts[1].get_payload()[1].items())
    assert fields["Final-Recipient"] == "rfc822; gone@remote.test"


def test_one_delay_notice_for_notify_delay_past_delay_warning(start, sink):
    s = sink(rcpt=lambda a: "451 4.2.1 mailbox busy")
    srv = start(plugins=[relay()], extra=delivery(relayhost=f"127.0.0.1:{s.port}",
                                                  delay_warning="1s", max_age="1h"))
    submit(srv, "alice@example.test", ["slow@remote.test"], "delayed", rcpt_options=["NOTIFY=DELAY,FAILURE"])
    submit(srv, "carol@example.test", ["slow@remote.test"], "not-asked")
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, 30, "the delay notice", srv)
    (dsn,) = reports(srv, "alice@example.test")
    assert dsn["Subject"] == "Delayed Mail (still being retried)"
    f = report_fields(dsn)
    assert (f["Action"], f["Status"]) == ("delayed", "4.2.1")
    assert "Will-Retry-Until" in f and "451 4.2.1 mailbox busy" in f["Diagnostic-Code"]
    # Once only, however many attempts follow; none for a sender who did not ask.
    first = len(s.rcpt_attempts)
    wait_until(lambda: len(s.rcpt_attempts) >= first + 4, 30, "more attempts", srv)
    assert maildir_count(srv, "alice@example.test") == 1
    assert maildir_count(srv, "carol@example.test") == 0
    assert len(srv.queued()) == 2
