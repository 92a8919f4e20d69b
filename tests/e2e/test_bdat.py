"""CHUNKING / BDAT (RFC 3030) on input, over raw sockets: messages in
chunks (split anywhere, pipelined, with an empty LAST chunk) arrive
byte-identical; the smuggling sequences DATA refuses are refused over BDAT
too, split across chunks; the size limit, the order of commands and the
syntax are enforced without ever reading chunk octets as commands."""

import socket

import pytest
from harness import Raw, ehlo, message
from test_smtp_basics import SMUGGLING

SMUGGLED = (b"MAIL FROM:<evil@client.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled\r\n")


def transaction(c):
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 250


def chunks(c, parts, last_empty=False):
    """Send `parts` as BDAT chunks (the last one LAST unless `last_empty`,
    then an empty LAST chunk); return every reply."""
    replies = []
    for i, p in enumerate(parts):
        last = i == len(parts) - 1 and not last_empty
        c.send(f"BDAT {len(p)}{' LAST' if last else ''}\r\n".encode() + p)
        replies.append(c.reply())
    if last_empty:
        c.send(b"BDAT 0 LAST\r\n")
        replies.append(c.reply())
    return replies


def stored(srv, qid):
    _, data = srv.read_queued(qid)
    return data


def test_chunking_is_offered_and_chunks_arrive_byte_identical(start):
    srv = start()
    c = ehlo(srv.port)
    assert "CHUNKING" in c.cmd("EHLO client.test")[1].split("\n")
    transaction(c)
    msg = message(subject="chunked", body="line one\r\n.a dot line\r\n.\r\nlast line\r\n")
    # Split inside CRLFs and at a line-start dot: chunk edges mean nothing.
    cut = [msg[:7], msg[7:msg.index(b"\r\n") + 1], msg[msg.index(b"\r\n") + 1:-3], msg[-3:]]
    replies = chunks(c, cut)
    assert [r[0] for r in replies] == [250, 250, 250, 250]
    assert replies[0][1] == "2.0.0 Ok: 7 octets received"
    assert replies[-1][1].startswith("2.0.0 Ok: queued as ")
    qid = replies[-1][1].rsplit(" ", 1)[1]
    assert stored(srv, qid).endswith(msg)       # after our Received field
    # Pipelined: a whole transaction in one write, an empty LAST chunk.
    body = message(subject="pipelined")
    c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.test>\r\n"
           + f"BDAT {len(body)}\r\n".encode() + body + b"BDAT 0 LAST\r\nNOOP\r\n")
    got = [c.reply() for _ in range(5)]
    assert [g[0] for g in got] == [250, 250, 250, 250, 250], got
    qid2 = got[3][1].rsplit(" ", 1)[1]
    assert stored(srv, qid2).endswith(body)
    # A last line without CRLF gets one.
    transaction(c)
    r = chunks(c, [b"Subject: x\r\n\r\nno line end"])
    assert r[-1][0] == 250
    assert stored(srv, r[-1][1].rsplit(" ", 1)[1]).endswith(b"\r\n\r\nno line end\r\n")
    assert len(srv.queued()) == 3


@pytest.mark.parametrize("seq", SMUGGLING, ids=[repr(s) for s in SMUGGLING])
@pytest.mark.parametrize("split", [0, 1, 2])
def test_smuggling_sequences_are_refused_across_chunks(start, seq, split):
    srv = start()
    c = ehlo(srv.port)
    transaction(c)
    data = message(body="innocent\r\n") + seq + SMUGGLED
    at = len(message(body="innocent\r\n")) + min(split, len(seq))
    replies = chunks(c, [data[:at], data[at:]], last_empty=True)
    # Refused as a whole, at the chunk where the bad octet is known (a CR
    # ending a chunk is only known bare when the next octet comes), or at
    # LAST: nothing spooled, and nothing in the chunks ran as a command.
    assert any(code == 554 for code, _ in replies), replies
    assert srv.queued() == []
    assert c.cmd("NOOP") == (250, "2.0.0 Ok")


def test_size_limit_order_and_syntax(start):
    srv = start(max_message_size=1000)
    c = ehlo(srv.port)
    # No transaction: the chunk is read and dropped, its octets never run.
    c.send(b"BDAT 6\r\nQUIT\r\n")
    assert c.reply()[0] == 503
    assert c.cmd("NOOP") == (250, "2.0.0 Ok")
    transaction(c)
    # Over the SIZE limit: 552 at that chunk, the transaction is over.
    big = b"x" * 600 + b"\r\n"
    r = chunks(c, [big, big], last_empty=True)
    assert r[0][0] == 250 and r[1][0] == 552, r
    assert r[2][0] == 503                       # LAST without a transaction
    # DATA cannot follow BDAT in one transaction.
    transaction(c)
    c.send(b"BDAT 12\r\nSubject: x\r\n")
    assert c.reply() == (250, "2.0.0 Ok: 12 octets received")
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("RSET")[0] == 250
    assert srv.queued() == []
    # BDAT needs EHLO.
    h = Raw(srv.port)
    h.reply()
    assert h.cmd("HELO client.test")[0] == 250
    h.send(b"MAIL FROM:<a@client.test>\r\n")
    assert h.reply()[0] == 250
    h.send(b"RCPT TO:<b@example.test>\r\n")
    assert h.reply()[0] == 250
    h.send(b"BDAT 5 LAST\r\nNOOP\n")
    code, text = h.reply()
    assert code == 503 and "EHLO" in text
    assert h.cmd("NOOP")[0] == 250
    # A size that cannot be read: 501 and the connection closes (whatever
    # follows cannot be told apart from commands).
    s = ehlo(srv.port)
    transaction(s)
    s.send(b"BDAT 12x LAST\r\nRSET\r\n")
    code, text = s.reply()
    assert code == 501 and "closing" in text
    assert s.closed()
