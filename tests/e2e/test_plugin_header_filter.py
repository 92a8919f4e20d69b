"""header-filter (the JavaScript component, target/plugins/header-filter.wasm)
through the real server: missing Date/Message-ID tagged with
X-Postern-Filter in the spooled message, reject rules (554 5.7.1), tag
rules, a local From domain from an unauthenticated untrusted client, and
config errors at load (plugins/header-filter/README.md). The component must
be built (`make plugins`); a missing one fails these tests."""

import pytest
from harness import Server
from pluginkit import AUTH_LISTENER, auth_file, component, greet, login, reply

TAG = "X-Postern-Filter"


def header_filter(config=None, **settings):
    return component("header-filter", config or {}, **({"max_memory": "64MiB", "timeout_ms": 5000} | settings))


def raw_message(headers: list[str], body="Hello.\r\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


FULL = ["From: Sender <sender@client.test>", "To: rcpt@example.test", "Subject: hello",
        "Date: Wed, 25 Nov 2026 10:00:00 +0000", "Message-ID: <hf-1@client.test>"]


def without(*names):
    return [h for h in FULL if h.split(":")[0] not in names]


def send(port, msg: bytes, session=None):
    c = session or greet(port)
    assert c.cmd("MAIL FROM:<sender@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<rcpt@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(msg + b".\r\n")
    return c.reply()


def tags(srv, code_text) -> list[str]:
    """The X-Postern-Filter values of the message queued by this reply."""
    code, text = code_text
    assert code == 250, code_text
    _, spooled = srv.read_queued(text.rsplit(" ", 1)[1])
    head = spooled.split(b"\r\n\r\n", 1)[0].decode()
    return [line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith(TAG + ":")]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("hf"), plugins=[header_filter({
        "local_domains": ["example.test"],
        "trusted_networks": [],
        "rules": [
            {"header": "Subject", "pattern": "^\\s*buy now", "flags": "i", "action": "reject", "text": "Spam subject"},
            {"header": "X-Mailer", "pattern": "bulk", "flags": "i", "text": "bulk mailer"},
            {"header": "Subject", "pattern": "newsletter"},
        ],
    })])
    s.start()
    yield s
    s.stop()


@pytest.mark.parametrize(
    "headers,want",
    [
        (FULL, []),
        (without("Date"), ["missing Date header"]),
        (without("Message-ID"), ["missing Message-ID header"]),
        (without("Date", "Message-ID"), ["missing Date header, missing Message-ID header"]),
        (FULL[:3] + ["Date: ", "Message-ID: <x@client.test>"], ["missing Date header"]),
        (FULL + ["X-Mailer: BulkSender 3.0"], ["bulk mailer"]),
        (without("Subject") + ["Subject: our Newsletter"], []),  # the rule is case-sensitive without "i"
        (without("Subject") + ["Subject: the newsletter"], ["Subject matches rule 3"]),
        (without("Date") + ["X-Mailer: bulk"], ["missing Date header, bulk mailer"]),
    ],
    ids=["clean", "no-date", "no-message-id", "neither", "empty-date", "tag-rule", "case-sensitive",
         "default-rule-text", "two-findings"],
)
def test_tagging(srv, headers, want):
    assert tags(srv, send(srv.port, raw_message(headers))) == want


@pytest.mark.parametrize("subject", ["Buy now!", "  BUY NOW cheap"])
def test_reject_rule(srv, subject):
    before = len(srv.queued())
    msg = raw_message(without("Subject") + [f"Subject: {subject}"])
    assert send(srv.port, msg) == reply(554, "5.7.1", "Message rejected: Spam subject")
    assert len(srv.queued()) == before


@pytest.mark.parametrize("sender", ["CEO <ceo@example.test>", "ceo@EXAMPLE.TEST.", '"x@client.test" <ceo@example.test>'])
def test_spoofed_local_from_is_tagged(srv, sender):
    msg = raw_message(without("From") + [f"From: {sender}"])
    assert tags(srv, send(srv.port, msg)) == ["local sender domain example.test from an unauthenticated client"]


def test_spoofed_local_from_rejected_unless_authenticated_or_trusted(start):
    cfg = {"action": "reject", "local_domains": ["example.test"], "trusted_networks": []}
    srv = start(plugins=[auth_file({"alice": "pw"}), header_filter(cfg)], listen=[], extra=AUTH_LISTENER)
    msg = raw_message(without("From") + ["From: Alice <alice@example.test>"])
    assert send(srv.port, msg) == \
        reply(554, "5.7.1", "Message rejected: local sender domain example.test from an unauthenticated client")
    assert send(srv.port, msg, login(srv.port, "alice", "pw"))[0] == 250
    # A foreign From domain is fine from anyone.
    assert send(srv.port, raw_message(FULL))[0] == 250
    srv = start(plugins=[header_filter(cfg | {"trusted_networks": ["127.0.0.0/8"]})])
    assert send(srv.port, msg)[0] == 250


@pytest.mark.parametrize(
    "config,want",
    [
        ({"rules": [{"header": "Subject", "pattern": "(unclosed"}]}, "rules[0].pattern is not a valid regular expression"),
        ({"action": "drop"}, "action"),
        ({"colour": "red"}, "unknown configuration key(s): colour"),
    ],
)
def test_bad_configuration_is_refused(start, config, want):
    with pytest.raises(RuntimeError) as e:
        start(plugins=[header_filter(config)])
    assert 'plugin "header-filter"' in str(e.value) and want in str(e.value), str(e.value)[-2000:]
