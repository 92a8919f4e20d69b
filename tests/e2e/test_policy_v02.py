"""What `postern:policy@0.2.0` adds, through the real server and a 0.2
plugin (the probe's `changes`): envelope rewriting, header removal and
replacement (in memory and for a message spilled to disk), quarantine, and
the rules that keep them safe (ignored for a refused message, checked like
replies). Skipped when the suite runs against 0.1 builds, which cannot ask
for any of this."""

import pytest
from harness import CONTRACT, Raw, message, plugin

pytestmark = pytest.mark.skipif(CONTRACT == "0.1", reason="0.2 abilities")


def probe(tag, changes=None, rules=(), headers=(), **settings):
    config = {"tag": tag, "rules": list(rules), "headers": list(headers), "changes": changes or {}}
    return plugin(tag, "test-probe", config, **settings)


def send(srv, sender, rcpts, msg):
    """One transaction over a raw connection; (code, text) of the final reply."""
    c = Raw(srv.port)
    assert c.reply()[0] == 220
    c.cmd("EHLO client.test")
    assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    for r in rcpts:
        assert c.cmd(f"RCPT TO:<{r}>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(msg + b".\r\n")
    reply = c.reply()
    c.cmd("QUIT")
    return reply


def queue_id(text):
    return text.rsplit(" ", 1)[1]


def test_sender_rewrite_and_recipient_add_remove(start):
    srv = start(plugins=[probe("p", {
        "set_sender": "bounces@example.test",
        "add_recipients": ["archive@example.test", "bob@example.test"],
        "remove_recipients": ["carol@example.test"],
    })])
    code, text = send(srv, "alice@client.test", ["bob@example.test", "carol@example.test"], message())
    assert code == 250, text
    env, _ = srv.read_queued(queue_id(text))
    assert env["mail_from"] == "bounces@example.test"
    # bob was already a recipient (no duplicate); carol is gone.
    assert [r["address"] for r in env["recipients"]] == ["bob@example.test", "archive@example.test"]


def test_null_sender_can_be_set(start):
    srv = start(plugins=[probe("p", {"set_sender": ""})])
    code, text = send(srv, "alice@client.test", ["bob@example.test"], message())
    assert code == 250, text
    env, _ = srv.read_queued(queue_id(text))
    assert env["mail_from"] == ""


def headers_of(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [l for l in head.split(b"\r\n") if l and l[:1] not in (b" ", b"\t")]


@pytest.mark.parametrize("body_kib", [1, 600])
def test_header_remove_and_replace(start, body_kib):
    """A large body is spilled to disk while it arrives: the rewritten header
    section is then followed by the body copied from the spill file."""
    srv = start(plugins=[probe("p", {
        "remove_headers": ["X-Secret"],
        "replace_headers": [["Subject", "[checked] hello"], ["X-Added", "1"]],
    }, headers=[["X-Tag", "kept"]])])
    body = ("".join(f"line {i:06d} " + "x" * 60 + "\r\n" for i in range(body_kib * 14))).encode()
    msg = (b"From: alice@client.test\r\nX-Secret: one\r\nSubject: hello\r\n"
           b"X-Secret: two\r\n folded\r\nTo: bob@example.test\r\n\r\n") + body
    code, text = send(srv, "alice@client.test", ["bob@example.test"], msg)
    assert code == 250, text
    _, stored = srv.read_queued(queue_id(text))
    names = [h.split(b":", 1)[0].lower() for h in headers_of(stored)]
    assert names[0] == b"received"
    assert b"x-secret" not in names and b"folded" not in stored
    assert b"\r\nSubject: [checked] hello\r\n" in stored and b"Subject: hello" not in stored
    assert names.count(b"x-added") == 1 and names.count(b"x-tag") == 1
    # The body is untouched, byte for byte.
    assert stored.split(b"\r\n\r\n", 1)[1] == body


def test_changes_are_ignored_when_the_message_is_refused(start):
    rule = {"stage": "data", "kind": "reject", "code": 550, "enhanced": "5.7.1", "text": "no", "contains": ""}
    srv = start(plugins=[probe("a", {"set_sender": "x@example.test", "quarantine": "held"}),
                         probe("b", rules=[rule])])
    code, _ = send(srv, "alice@client.test", ["bob@example.test"], message())
    assert code == 550
    assert srv.queued() == []


@pytest.mark.parametrize("changes,why", [
    ({"add_recipients": ["not an address"]}, "envelope address"),
    ({"replace_headers": [["Bad Name", "v"]]}, "invalid field name"),
    ({"replace_headers": [["X-Ok", "a\r\nInjected: yes"]]}, "CR, LF or NUL"),
    ({"quarantine": "bad\nreason"}, "quarantine reason"),
])
def test_invalid_changes_are_the_plugins_error(start, changes, why):
    srv = start(plugins=[probe("p", changes)])
    code, _ = send(srv, "alice@client.test", ["bob@example.test"], message())
    assert code == 451  # on_error = tempfail
    assert srv.queued() == []
    rec = srv.wait_log(lambda r: r.get("plugin") == "p" and "invalid reply" in str(r.get("message")))
    assert why in rec["message"]


def test_removing_every_recipient_is_refused(start):
    srv = start(plugins=[probe("p", {"remove_recipients": ["bob@example.test"]})])
    code, text = send(srv, "alice@client.test", ["bob@example.test"], message())
    assert code == 451, text
    assert srv.queued() == []
    srv.wait_log(lambda r: "removed every recipient" in str(r.get("message")))
