"""message-limits through the real server: message size per client class
(SIZE= at MAIL FROM and the received size at DATA; network and
authenticated classes), recipients per message, messages per window (421
and close), connections per window (421 greeting and close), counters that
span sessions, and kv failures (plugins/message-limits/README.md)."""

import pytest
from harness import Raw, message
from pluginkit import AUTH_LISTENER, auth_file, component, greet, login, reply


def limits(config, **settings):
    return component("message-limits", config, **({"capabilities": ["kv"]} | settings))


def too_big(cls):
    return reply(552, "5.3.4", f"Message size exceeds limit for {cls}")


def body_of(size):
    """A message of exactly `size` bytes as received (CRLF line ends)."""
    head = message(body="")
    line = b"x" * 70 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
    body += b"y" * (size - len(head) - len(body) - 2) + b"\r\n"
    m = head + body
    assert len(m) == size, len(m)
    return m


def send_data(c, msg):
    assert c.cmd("DATA")[0] == 354
    c.send(msg + b".\r\n")
    return c.reply()


CLASSES = {
    "default": {"max_message_size": 1000},
    "classes": [
        {"name": "lan", "networks": ["10.0.0.0/8", "::ffff:127.0.0.0/104"], "max_message_size": 5000},
        {"name": "submission", "authenticated": True, "max_message_size": 20000},
    ],
}


@pytest.mark.parametrize("lan", [True, False], ids=["lan-class", "default-class"])
def test_message_size_per_network_class(start, lan):
    cfg = CLASSES if lan else CLASSES | {"classes": [CLASSES["classes"][0] | {"networks": ["10.0.0.0/8"]}]}
    srv = start(plugins=[limits(cfg)])
    cls = "lan" if lan else "default"
    limit = 5000 if lan else 1000
    c = greet(srv.port)
    # Declared size, at MAIL FROM (RFC 1870).
    assert c.cmd(f"MAIL FROM:<a@client.test> SIZE={limit + 1}") == too_big(cls)
    assert c.cmd(f"MAIL FROM:<a@client.test> SIZE={limit}")[0] == 250
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 250
    assert send_data(c, body_of(limit))[0] == 250
    # Actual size, at DATA, when SIZE= was not given (or lied).
    assert c.cmd("MAIL FROM:<a@client.test> SIZE=10")[0] == 250
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 250
    assert send_data(c, body_of(limit + 1)) == too_big(cls)
    # The refused transaction is over; a new one works.
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250


def test_message_size_for_authenticated_sessions(start):
    srv = start(plugins=[auth_file({"alice": "pw"}), limits(CLASSES | {"classes": CLASSES["classes"][1:]})],
                listen=[], extra=AUTH_LISTENER)
    c = greet(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test> SIZE=15000") == too_big("default")
    c = login(srv.port, "alice", "pw")
    assert c.cmd("MAIL FROM:<a@client.test> SIZE=15000")[0] == 250
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 250
    assert send_data(c, body_of(15000))[0] == 250
    assert c.cmd("MAIL FROM:<a@client.test> SIZE=20001") == too_big("submission")


def test_recipients_per_message(start):
    srv = start(plugins=[limits({"default": {"max_recipients": 2}})])
    c = greet(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<r1@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<r2@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<r3@example.test>") == reply(452, "4.5.3", "Too many recipients")
    # The message still goes to the two accepted recipients.
    code, text = send_data(c, message())
    assert code == 250
    env, _ = srv.read_queued(text.rsplit(" ", 1)[1])
    assert [r["address"] for r in env["recipients"]] == ["r1@example.test", "r2@example.test"]
    # The count is per message.
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<r3@example.test>")[0] == 250


def test_messages_per_window_across_sessions(start):
    srv = start(plugins=[limits({"window": 60, "default": {"max_messages": 2}})])
    c = greet(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RSET")[0] == 250
    c.close()
    c = greet(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RSET")[0] == 250
    assert c.cmd("MAIL FROM:<a@client.test>") == reply(421, "4.7.0", "Rate limit exceeded, try again later")
    assert c.closed()
    # Still over the limit in a new session.
    c = greet(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>") == reply(421, "4.7.0", "Rate limit exceeded, try again later")


def test_connections_per_window(start):
    srv = start(plugins=[limits({"default": {"max_connections_rate": 2}})])
    for _ in range(2):
        with Raw(srv.port) as c:
            assert c.reply()[0] == 220
            c.cmd("QUIT")
    c = Raw(srv.port)
    assert c.reply() == reply(421, "4.7.0", "Too many connections from 127.0.0.1, slow down")
    assert c.closed()


def test_a_class_without_limits_is_not_counted(start):
    srv = start(plugins=[limits({"default": {"max_connections_rate": 1},
                                 "classes": [{"name": "local", "networks": ["127.0.0.0/8"]}]})])
    for _ in range(3):
        with Raw(srv.port) as c:
            assert c.reply()[0] == 220


def test_kv_failures(start):
    cfg = {"default": {"max_connections_rate": 5, "max_messages": 5}}
    srv = start(plugins=[limits(cfg, capabilities=[])])
    c = Raw(srv.port)
    assert c.reply() == reply(421, "4.3.0", "Rate limit check unavailable, try again later")
    assert c.closed()
    srv = start(plugins=[limits(cfg | {"on_kv_error": "allow"}, capabilities=[])])
    c = greet(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    srv = start(plugins=[limits({"default": {"max_messages": 5}}, capabilities=[])])
    c = greet(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>") == reply(451, "4.3.0", "Rate limit check unavailable, try again later")
