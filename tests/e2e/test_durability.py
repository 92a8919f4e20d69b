"""RFC 5321 §6.1: a message that got 250 survives kill -9; a torn record at the
end of the spool's log (a crash mid-append) is cut off on restart and every
complete one kept."""

import smtplib

from harness import Server, ehlo, message


def test_kill9_right_after_250_keeps_the_message(tmp_path, request):
    srv = Server(tmp_path / "a").start()
    request.addfinalizer(srv.stop)
    accepted = []
    c = ehlo(srv.port)
    for i in range(5):
        c.cmd("MAIL FROM:<a@client.test>")
        c.cmd("RCPT TO:<b@example.test>")
        c.cmd("DATA")
        body = f"message number {i}\r\n" + ("x" * 70 + "\r\n") * 70
        c.send(message(subject=f"m{i}", body=body) + b".\r\n")
        code, text = c.reply()
        assert code == 250
        accepted.append((text.rsplit(" ", 1)[1], body.encode()))
    srv.kill9()
    # Leave a torn record at the end of the active segment, as a crash mid-append
    # would: a record header and the start of its body (the first 200 bytes of a
    # copy of the first record, which is longer).
    active = sorted((srv.spool_dir / "log").glob("*.seg"))[-1]
    data = active.read_bytes()
    torn = data[32:232]
    assert torn.startswith(b"PREC")
    active.write_bytes(data + torn)
    again = Server(tmp_path / "a")  # same directory and config
    again.config_path = srv.config_path
    again.start()
    try:
        rec = again.wait_log(lambda r: r.get("message") == "spool recovered")
        assert rec["kept"] == 5 and rec["truncated_bytes"] == len(torn), rec
        assert rec["quarantined"] == 0 and rec["skipped"] == 0, rec
        assert active.stat().st_size == len(data)
        assert again.queued() == sorted(q for q, _ in accepted)
        for qid, body in accepted:
            env, msg = again.read_queued(qid)
            assert env["queue_id"] == qid
            assert msg.endswith(body)
            assert msg.startswith(b"Received: from client.test")
        # And it keeps accepting mail.
        with smtplib.SMTP("127.0.0.1", again.port) as s:
            s.sendmail("a@client.test", ["b@example.test"], message())
        assert len(again.queued()) == 6
    finally:
        again.stop()


def test_refused_message_leaves_nothing(start):
    srv = start(max_message_size=100)
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    c.cmd("RCPT TO:<b@example.test>")
    c.cmd("DATA")
    c.send(message(body="y" * 500 + "\r\n") + b".\r\n")
    assert c.reply()[0] == 552
    assert srv.queued() == []
    assert srv.spool().count() == 0  # not a single record in the log
