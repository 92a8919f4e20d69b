"""The SMTP dialogue with no plugins: greeting, EHLO keywords, a message
spooled with its Received header, sequencing, defaults for relay, VRFY and
EXPN, limits, pipelining, and bare CR/LF (SMTP smuggling) refusal."""

import smtplib
import signal
import socket
import subprocess
import time

import pytest
from harness import Raw, ehlo, message


def test_greeting_ehlo_and_queue(start):
    srv = start()
    c = Raw(srv.port)
    code, text = c.reply()
    assert code == 220 and text.startswith("mx.example.test ESMTP")
    code, text = c.cmd("EHLO client.test")
    assert code == 250
    kws = text.split("\n")[1:]
    for kw in ["PIPELINING", "SIZE 26214400", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]:
        assert kw in kws
    assert c.cmd("MAIL FROM:<sender@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<rcpt@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(message() + b".\r\n")
    code, text = c.reply()
    assert code == 250 and text.startswith("2.0.0 Ok: queued as ")
    qid = text.rsplit(" ", 1)[1]
    assert c.cmd("QUIT")[0] == 221
    assert srv.queued() == [qid]
    env, msg = srv.read_queued(qid)
    assert env["mail_from"] == "sender@client.test"
    assert [r["address"] for r in env["recipients"]] == ["rcpt@example.test"]
    assert env["client_ip"] == "127.0.0.1"
    first = msg.split(b"\r\n\t")[0]
    assert first == b"Received: from client.test (unknown [127.0.0.1])"
    assert f"id {qid}".encode() in msg
    assert msg.endswith(b"Hello.\r\n")


def test_smtplib_and_swaks(start):
    srv = start()
    with smtplib.SMTP("127.0.0.1", srv.port) as s:
        s.ehlo("client.test")
        refused = s.sendmail("a@client.test", ["x@example.test", "Y@EXAMPLE.TEST."], message())
        assert refused == {}
    out = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{srv.port}", "--to", "someone@example.test", "--from", "a@client.test"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Ok: queued as" in out.stdout
    assert len(srv.queued()) == 2


def test_relay_denied_by_default(start):
    srv = start()
    c = ehlo(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    code, text = c.cmd("RCPT TO:<victim@elsewhere.test>")
    assert (code, text) == (554, "5.7.1 <victim@elsewhere.test>: Relay access denied")
    # Tricks do not smuggle a remote domain past the default either.
    assert c.cmd("RCPT TO:<victim@[192.0.2.1]>")[0] == 554
    assert c.cmd("RCPT TO:<@example.test:victim@elsewhere.test>")[0] == 554
    # Postmaster is always local.
    assert c.cmd("RCPT TO:<Postmaster>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(message() + b".\r\n")
    assert c.reply()[0] == 250


def test_vrfy_expn_help_noop_rset(start):
    srv = start()
    c = ehlo(srv.port)
    assert c.cmd("VRFY root")[0] == 252
    assert c.cmd("EXPN staff")[0] == 502
    assert c.cmd("HELP")[0] == 214
    assert c.cmd("NOOP")[0] == 250
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 250
    assert c.cmd("RSET")[0] == 250
    # The transaction is gone.
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 503
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250


@pytest.mark.parametrize(
    "line,code",
    [
        ("FOO bar", 500),
        ("MAIL FROM:<a@client.test>", 503),  # before HELO
        ("HELO", 501),
        ("STARTTLS", 502),
    ],
)
def test_sequence_and_syntax_errors(start, line, code):
    srv = start()
    c = Raw(srv.port)
    c.reply()
    assert c.cmd(line)[0] == code


def test_command_errors_after_ehlo(start):
    srv = start()
    c = ehlo(srv.port)
    assert c.cmd("MAIL FROM:a@client.test")[0] == 501
    code, text = c.cmd("MAIL FROM:<a@@client.test>")
    assert code == 501 and text.startswith("5.1.7")
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("MAIL FROM:<a@client.test> FOO=BAR")[0] == 555
    assert c.cmd("MAIL FROM:<a@client.test> BODY=BINARYMIME")[0] == 555
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 503
    assert c.cmd("DATA")[0] == 554  # no valid recipients
    assert c.cmd("RCPT TO:<a@example.test> XFOO=1")[0] == 555
    assert c.cmd("RCPT TO:<a@example.test> NOTIFY=SOMETIMES")[0] == 501  # DSN (RFC 3461)
    assert c.cmd("RCPT TO:<a@example.test> NOTIFY=NEVER")[0] == 250


def test_smtputf8(start):
    srv = start(local_domains=["example.test", "exämple.test"])
    c = ehlo(srv.port)
    assert c.cmd("MAIL FROM:<jörg@client.test>")[0] == 553
    assert c.cmd("MAIL FROM:<jörg@client.test> SMTPUTF8")[0] == 250
    assert c.cmd("RCPT TO:<möller@exämple.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(message().replace(b"test\r\n", "tëst\r\n".encode(), 1) + b".\r\n")
    code, text = c.reply()
    assert code == 250
    env, msg = srv.read_queued(text.rsplit(" ", 1)[1])
    assert env["recipients"][0]["address"] == "möller@exämple.test"
    assert b"with UTF8SMTP id" in msg


def test_recipient_limit(start):
    srv = start(max_recipients=3)
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    for i in range(3):
        assert c.cmd(f"RCPT TO:<r{i}@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<r4@example.test>") == (452, "4.5.3 Too many recipients")
    assert c.cmd("DATA")[0] == 354
    c.send(message() + b".\r\n")
    code, text = c.reply()
    assert code == 250
    env, _ = srv.read_queued(text.rsplit(" ", 1)[1])
    assert len(env["recipients"]) == 3


def test_size_limits(start):
    srv = start(max_message_size=2000)
    c = ehlo(srv.port)
    assert "SIZE 2000" in c.cmd("EHLO again.test")[1]
    assert c.cmd("MAIL FROM:<a@client.test> SIZE=2001")[0] == 552
    assert c.cmd("MAIL FROM:<a@client.test> SIZE=1000")[0] == 250
    c.cmd("RCPT TO:<b@example.test>")
    c.cmd("DATA")
    c.send(message(body="x" * 70 + "\r\n") * 40 + b".\r\n")
    assert c.reply()[0] == 552
    assert srv.queued() == []
    # The session continues normally afterwards.
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250


def test_mail_loop_refused_by_received_count(start):
    """RFC 5321 §6.3: a message already carrying max_hops Received: fields is
    looping; refused 554 5.4.6 before any plugin or the spool sees it. Only
    header fields count (not body lines, not X-Received)."""
    hops = lambda n: "".join(f"Received: from r{i}.test by r{i + 1}.test; {i}\r\n" for i in range(n))
    srv = start(max_hops=5)
    c = ehlo(srv.port)
    for n, expected in ((4, 250), (5, 554), (30, 554)):
        c.cmd("MAIL FROM:<a@client.test>")
        c.cmd("RCPT TO:<b@example.test>")
        assert c.cmd("DATA")[0] == 354
        extra = "X-Received: not a trace field\r\n" * 10
        c.send(hops(n).encode() + message(extra=extra, body="Received: in the body\r\n" * 10) + b".\r\n")
        code, text = c.reply()
        assert code == expected, (n, code, text)
        if expected == 554:
            assert text == f"5.4.6 Message refused: too many hops ({n} Received: fields), routing loop"
    (qid,) = srv.queued()
    _, raw = srv.read_queued(qid)
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert [line.split(b" ", 1)[0] for line in header.split(b"\r\n")].count(b"Received:") == 5  # 4 + ours
    # The default is RFC 5321's "at least 100"; 0 turns the check off.
    for settings, n, expected in (({}, 99, 250), ({}, 100, 554), ({"max_hops": 0}, 500, 250)):
        srv = start(**settings)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            try:
                s.sendmail("a@client.test", ["b@example.test"], hops(n).encode() + message())
                code = 250
            except smtplib.SMTPDataError as e:
                code = e.smtp_code
        assert code == expected, (settings, n, code)


def test_line_length_limits(start):
    srv = start()
    c = ehlo(srv.port)
    # 512 octets including CRLF is the longest command line (RFC 5321 4.5.3.1.4).
    ok = "NOOP " + "x" * (512 - 2 - 5)
    assert c.cmd(ok)[0] == 250
    assert c.cmd(ok + "x")[0] == 500
    assert c.cmd("NOOP")[0] == 250
    c.cmd("MAIL FROM:<a@client.test>")
    c.cmd("RCPT TO:<b@example.test>")
    c.cmd("DATA")
    long_line = b"y" * 999 + b"\r\n"  # 1001 octets
    c.send(message(body="fine\r\n") + long_line + b".\r\n")
    assert c.reply()[0] == 554
    c.cmd("MAIL FROM:<a@client.test>")
    c.cmd("RCPT TO:<b@example.test>")
    c.cmd("DATA")
    c.send(message(body="z" * 998 + "\r\n") + b".\r\n")
    assert c.reply()[0] == 250
    assert len(srv.queued()) == 1


SMUGGLING = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b".\n",
]


@pytest.mark.parametrize("seq", SMUGGLING, ids=[repr(s) for s in SMUGGLING])
def test_smuggling_sequences_never_end_data(start, seq):
    srv = start()
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    c.cmd("RCPT TO:<b@example.test>")
    assert c.cmd("DATA")[0] == 354
    smuggled = (
        b"MAIL FROM:<evil@client.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nsmuggled\r\n"
    )
    c.send(message(body="innocent\r\n") + seq + smuggled + b"\r\n.\r\n")
    code, _ = c.reply()
    # Refused as a whole (bare CR/LF, or a NUL that neither 7bit nor 8bit
    # content may carry): nothing spooled, no second transaction.
    assert code == 554
    assert srv.queued() == []
    # Exactly one reply to the DATA: nothing else was interpreted as a command.
    assert c.cmd("NOOP") == (250, "2.0.0 Ok")


def test_bare_lf_in_command(start):
    srv = start()
    c = Raw(srv.port)
    c.reply()
    c.send(b"EHLO client.test\n")
    assert c.reply()[0] == 500
    # Everything after a bare CR up to the line end belongs to the bad line:
    # exactly one 500, the MAIL is never executed (the NOOP after it answers).
    c.send(b"NOOP\rMAIL FROM:<a@client.test>\r\nNOOP\r\n")
    assert c.reply()[0] == 500
    assert c.reply() == (250, "2.0.0 Ok")
    c.send(b"EHLO client.test\r\n")
    assert c.reply()[0] == 250
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 503  # no MAIL was accepted


def test_pipelining_replies_in_order(start):
    srv = start()
    c = Raw(srv.port)
    c.reply()
    batch = (
        b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.test>\r\n"
        b"RCPT TO:<nobody@elsewhere.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n"
    )
    c.send(batch)
    codes = [c.reply()[0] for _ in range(6)]
    assert codes == [250, 250, 250, 554, 250, 354]
    c.send(message() + b".\r\nMAIL FROM:<d@client.test>\r\nRCPT TO:<e@example.test>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    c.send(message() + b".\r\nQUIT\r\n")
    assert c.reply()[0] == 250
    assert c.reply()[0] == 221
    assert len(srv.queued()) == 2
    # Replies to one pipelined batch arrive in one write.
    c2 = Raw(srv.port)
    c2.reply()
    c2.send(b"EHLO a.test\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
    c2.sock.settimeout(5)
    data = b""
    while data.count(b"\r\n") < 9:
        data += c2.sock.recv(65536)
    assert data.count(b"250 2.0.0 Ok") == 3


def test_too_many_errors_closes(start):
    srv = start(max_bad_commands=3)
    c = Raw(srv.port)
    c.reply()
    for _ in range(3):
        assert c.cmd("BOGUS")[0] == 500
    code, text = c.cmd("BOGUS")
    assert code == 421 and "Too many errors" in text
    assert c.closed()


def test_null_sender_and_8bitmime(start):
    srv = start()
    c = ehlo(srv.port)
    assert c.cmd("MAIL FROM:<> BODY=8BITMIME")[0] == 250
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 250
    c.cmd("DATA")
    c.send(message(body="caf\xe9\r\n").replace(b"caf\xc3\xa9", b"caf\xe9") + b".\r\n")
    code, text = c.reply()
    assert code == 250
    env, msg = srv.read_queued(text.rsplit(" ", 1)[1])
    assert env["mail_from"] == ""
    assert env["mail_params"] == ["BODY=8BITMIME"]
    assert b"caf\xe9" in msg


def test_dot_stuffing(start):
    srv = start()
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    c.cmd("RCPT TO:<b@example.test>")
    c.cmd("DATA")
    c.send(message(body="..leading dot\r\n.\r\n"))
    code, text = c.reply()
    _, msg = srv.read_queued(text.rsplit(" ", 1)[1])
    assert msg.endswith(b"\r\n.leading dot\r\n")


def greeting_after_a_slot_frees(port: int) -> int:
    """The greeting code of a new connection once the server has noticed a
    closed one (the slot is freed when the session task ends)."""
    for _ in range(50):
        d = Raw(port)
        code, _ = d.reply()
        d.close()
        if code == 220:
            break
        time.sleep(0.05)
    return code


def test_connection_limits(start):
    srv = start(max_connections_per_ip=2)
    a, b = Raw(srv.port), Raw(srv.port)
    assert a.reply()[0] == 220 and b.reply()[0] == 220
    c = Raw(srv.port)
    code, text = c.reply()
    assert code == 421 and "Too many connections" in text
    a.cmd("QUIT")
    a.closed()
    assert greeting_after_a_slot_frees(srv.port) == 220


def test_overall_connection_limit(start):
    """max_connections counts every client: the one beyond gets 421."""
    srv = start(max_connections=3, max_connections_per_ip=10)
    held = [Raw(srv.port) for _ in range(3)]
    assert all(c.reply()[0] == 220 for c in held)
    extra = Raw(srv.port)
    code, text = extra.reply()
    assert code == 421 and "Too many connections" in text
    assert extra.closed()
    held[0].cmd("QUIT")
    held[0].closed()
    assert greeting_after_a_slot_frees(srv.port) == 220


def test_ipv6_clients_share_their_slash_64_allowance(start):
    """max_connections_per_ip counts an IPv6 /64 as one client."""
    probe = socket.socket(socket.AF_INET6)
    try:
        probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    finally:
        probe.close()
    srv = start(listen=["[::1]:0"], max_connections_per_ip=2)
    a, b = Raw(srv.port, host="::1"), Raw(srv.port, host="::1")
    assert a.reply()[0] == 220 and b.reply()[0] == 220
    code, text = Raw(srv.port, host="::1").reply()
    assert code == 421 and "Too many connections" in text


def test_data_timeout(start):
    """RFC 5321 §4.5.3.2.6: a client that stops in the middle of DATA is
    dropped after data_timeout, and nothing is spooled."""
    srv = start(data_timeout="1s", command_timeout="30s")
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    c.cmd("RCPT TO:<b@example.test>")
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: half\r\n\r\nhalf a messa")
    c.sock.settimeout(10)
    t0 = time.monotonic()
    code, text = c.reply()
    assert code == 421 and "Timeout" in text
    assert time.monotonic() - t0 < 8
    assert c.closed()
    assert srv.queued() == []


def test_ctrl_c_shuts_down_gracefully(start):
    srv = start(shutdown_timeout="10s")
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    c.cmd("RCPT TO:<b@example.test>")
    c.cmd("DATA")
    c.send(message(body="before the signal\r\n"))
    srv.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    c.send(b".\r\n")
    assert c.reply()[0] == 250
    assert srv.proc.wait(15) == 0
    assert len(srv.queued()) == 1


def test_command_timeout(start):
    srv = start(command_timeout="1s")
    c = Raw(srv.port)
    c.reply()
    c.sock.settimeout(5)
    code, text = c.reply()
    assert code == 421 and "Timeout" in text
    assert c.closed()


def test_graceful_shutdown_finishes_transfer(start):
    srv = start(shutdown_timeout="10s")
    idle = ehlo(srv.port)
    busy = ehlo(srv.port)
    busy.cmd("MAIL FROM:<a@client.test>")
    busy.cmd("RCPT TO:<b@example.test>")
    busy.cmd("DATA")
    busy.send(message(body="first half\r\n"))
    srv.proc.send_signal(15)
    # The idle session is told the service is going away.
    code, text = idle.reply()
    assert code == 421 and "shutting down" in text
    # New connections are no longer accepted.
    refused = False
    for _ in range(40):
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):
            refused = True
            break
        time.sleep(0.05)
    assert refused
    # The transfer in progress completes and is durably queued.
    busy.send(b"second half\r\n.\r\n")
    code, text = busy.reply()
    assert code == 250
    assert srv.proc.wait(15) == 0
    assert len(srv.queued()) == 1
