"""What `postern:policy@0.2.0` adds, through the real server and a 0.2
plugin (the probe's `changes`): envelope rewriting, header removal and
replacement (in memory and for a message spilled to disk), quarantine, and
the rules that keep them safe (ignored for a refused message, checked like
replies). Skipped when the suite runs against 0.1 builds, which cannot ask
for any of this."""

import subprocess
import time

import pytest
from harness import BIN, CONTRACT, Raw, message, plugin
from test_delivery import delivery, maildir_count, wait_until

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


def queue(srv, *args):
    """`postern queue ARGS --config <the server's>`: (exit code, stdout + stderr)."""
    r = subprocess.run([str(BIN), "queue", *args, "--config", str(srv.config_path)],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_quarantine_holds_until_released(start):
    """The client gets 250; the message waits in the queue (listed with its
    reason, not delivered, kept across a restart) until `queue release`, then
    it is delivered like a fresh one. A message that is not held cannot be
    released."""
    srv = start(plugins=[probe("p", {"quarantine": "suspicious attachment"})],
                extra=delivery())
    code, text = send(srv, "bob@client.test", ["alice@example.test"], message(subject="held"))
    assert code == 250, text
    qid = queue_id(text)
    code, out = queue(srv, "list", "--quarantined")
    assert code == 0 and qid in out and "quarantined: suspicious attachment" in out, out
    time.sleep(1.5)  # delivery is on: a held message is still not delivered
    assert maildir_count(srv, "alice@example.test") == 0
    assert srv.queued() == [qid]
    # The hold survives a restart.
    srv.stop()
    srv.start()
    code, out = queue(srv, "show", qid)
    assert code == 0 and "quarantine: suspicious attachment" in out and "quarantined" in out, out
    code, out = queue(srv, "release", qid)
    assert code == 0 and f"released {qid}" in out, out
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="released mail", srv=srv)
    wait_until(lambda: srv.queued() == [], what="queue empty", srv=srv)
    code, out = queue(srv, "release", qid)
    assert code == 1 and f"no quarantined message {qid}" in out, out


def test_quarantine_release_offline_is_durable_and_delete_drops(start):
    """Without a server, release is journaled in the spool and honoured at the
    next start; delete removes a held message without a bounce."""
    srv = start(plugins=[probe("p", {"quarantine": "manual review"})], extra=delivery())
    ids = [queue_id(send(srv, "bob@client.test", ["alice@example.test"], message(subject=s))[1])
           for s in ("one", "two")]
    srv.stop()
    code, out = queue(srv, "list", "--quarantined")
    assert code == 0 and all(i in out for i in ids) and "no server running" in out, out
    code, out = queue(srv, "release", ids[0])
    assert code == 0 and "delivered when the server starts" in out, out
    code, out = queue(srv, "delete", ids[1])
    assert code == 0, out
    srv.start()
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="released mail", srv=srv)
    wait_until(lambda: srv.queued() == [], what="queue empty", srv=srv)
    # No bounce for the deleted one (bob is remote; a bounce would sit queued).
    assert maildir_count(srv, "alice@example.test") == 1


def test_outcomes_reach_observers_in_one_batch_per_transaction(start):
    """0.2 observers get a transaction's outcomes in one call after its
    replies, each with the session state of its time."""
    srv = start(plugins=[probe("p")])
    code, _ = send(srv, "alice@client.test", ["bob@example.test", "carol@example.test"], message())
    assert code == 250
    srv.wait_log(lambda r: "Stage::Disconnect" in str(r.get("message")))
    outcomes = [x for x in srv.probe_calls("p") if x["stage"] == "outcome"]
    stages = [o["arg"]["stage"] for o in outcomes]
    assert stages[:6] == ["Stage::Connect", "Stage::Helo", "Stage::MailFrom", "Stage::RcptTo",
                          "Stage::RcptTo", "Stage::Data"], stages
    data = outcomes[5]["arg"]
    # The transaction's four outcomes came in one call (with connect and
    # EHLO too, unless the client paused long enough for those to go first).
    assert len({o["arg"]["batch"] for o in outcomes[2:6]}) == 1 and data["batch"] >= 4, outcomes
    assert data["mail_from"] == "alice@client.test" and data["recipient_count"] == 2
    assert outcomes[1]["arg"]["helo"] == "client.test" and outcomes[0]["arg"]["helo"] is None
    # The session handle answers for delivery time: the transaction is over.
    assert outcomes[5]["session"]["mail_from"] is None
