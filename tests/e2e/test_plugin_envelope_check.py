"""envelope-check through the real server with an authoritative DNS server
on loopback: sender domains with MX, A-only (implicit MX), AAAA-only,
NXDOMAIN, no records, null MX, SERVFAIL and a silent name server (a
temporary failure within the plugin's time limit, not a plugin failure);
the missing "dns" capability;
HELO sanity (syntax, our own name or address, FQDN); local mailbox checks
(plugins/envelope-check/README.md)."""

import socket
import time

import pytest
from harness import DnsServer, Raw, Server
from pluginkit import component, greet, reply, wait_plugin_log

NOT_FOUND = reply(550, "5.1.8", "Sender address rejected: Domain not found")
NULL_MX = reply(550, "5.1.8", "Sender address rejected: domain accepts no mail (null MX)")
TEMP = reply(451, "4.4.3", "Sender address rejected: temporary DNS failure")
RECORDS = {
    ("mx.example.net", "MX"): [(10, "mail.mx.example.net")],
    ("mail.mx.example.net", "A"): ["192.0.2.25"],
    ("aonly.example.net", "A"): ["192.0.2.10"],
    ("v6only.example.net", "AAAA"): ["2001:db8::10"],
    ("nullmx.example.net", "MX"): [(0, ".")],
    ("empty.example.net", "TXT"): ["v=spf1 -all"],
    ("unspecified.example.net", "A"): ["0.0.0.0"],
}


@pytest.fixture(scope="module")
def dns():
    d = DnsServer(RECORDS, servfail=("broken.example.net",), silent=("silent.example.net",))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def srv(dns, tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("envelope"), extra=dns.config(),
               plugins=[component("envelope-check", {"skip_domains": ["skipped.example.net"]}, capabilities=["dns"])])
    s.start()
    yield s
    s.stop()


def mail_from(port, sender, helo="client.test"):
    c = greet(port, helo)
    return c.cmd(f"MAIL FROM:<{sender}>")


SENDERS = [
    ("a@mx.example.net", 250),
    ("a@MX.Example.NET.", 250),
    ("a@aonly.example.net", 250),
    ("a@v6only.example.net", 250),
    ("a@nx.example.net", NOT_FOUND),
    ("a@empty.example.net", NOT_FOUND),
    ("a@unspecified.example.net", NOT_FOUND),
    ("a@nullmx.example.net", NULL_MX),
    ("a@broken.example.net", TEMP),
    ("", 250),  # the null sender: bounces must flow
    ("a@[192.0.2.1]", 250),  # address literal: no look-up
    ("a@skipped.example.net", 250),  # skip_domains
]


@pytest.mark.parametrize("sender,want", SENDERS, ids=[s[0] or "<>" for s in SENDERS])
def test_sender_domain(srv, sender, want):
    got = mail_from(srv.port, sender)
    if want == 250:
        assert got[0] == 250, got
    else:
        assert got == want


def test_lookups_follow_mx_then_a_then_aaaa(srv, dns):
    asked = lambda name: [t for n, t in dns.queries if n == name]  # noqa: E731
    assert mail_from(srv.port, "b@aonly.example.net")[0] == 250
    assert asked("aonly.example.net")[:2] == ["MX", "A"] and "AAAA" not in asked("aonly.example.net")
    assert mail_from(srv.port, "b@v6only.example.net")[0] == 250
    assert asked("v6only.example.net")[:3] == ["MX", "A", "AAAA"]
    # NXDOMAIN at the A step: AAAA is not asked.
    assert mail_from(srv.port, "b@nx2.example.net") == NOT_FOUND
    assert "AAAA" not in asked("nx2.example.net")
    # Skipped senders are never looked up.
    for name in ("skipped.example.net", "192.0.2.1", "[192.0.2.1]"):
        assert asked(name) == []


def test_a_silent_name_server_defers_the_sender_within_the_time_limit(start, dns):
    # The resolver would wait 5s twice (the [dns] default); the plugin's call
    # has 2s (timeout_ms). The host cuts the look-up short with a temporary
    # failure, so the plugin answers its own 451 4.4.3 in time, not the
    # host's 451 4.3.0 for a plugin that ran out of time.
    s = start(extra=dns.config(timeout="5s"),
              plugins=[component("envelope-check", {"check_sender_domain": True}, capabilities=["dns"])])
    c = greet(s.port)
    started = time.monotonic()
    got = c.cmd("MAIL FROM:<a@silent.example.net>")
    took = time.monotonic() - started
    assert got == TEMP
    assert took < 2.0, took
    assert ("silent.example.net", "MX") in dns.queries
    lines = wait_plugin_log(s, "envelope-check", "temporary DNS failure checking the sender domain")
    assert ("error", "timeout") in lines[0][1], lines
    assert not [r for r in s.log_records() if r.get("error_kind") == "timeout"]


def test_local_senders_are_not_looked_up(dns, tmp_path):
    # The local domain has no DNS records at all: a look-up would refuse it.
    with Server(tmp_path, extra=dns.config(), local_domains=["local.example.net"],
                plugins=[component("envelope-check", capabilities=["dns"])]) as s:
        assert mail_from(s.port, "a@local.example.net")[0] == 250
        assert [n for n, _ in dns.queries if n == "local.example.net"] == []


def test_without_the_dns_capability_senders_are_deferred(start, dns):
    s = start(extra=dns.config(), plugins=[component("envelope-check")])
    assert mail_from(s.port, "a@mx.example.net") == TEMP
    assert mail_from(s.port, "")[0] == 250
    s = start(extra=dns.config(), plugins=[component("envelope-check", {"check_sender_domain": False})])
    assert mail_from(s.port, "a@nx.example.net")[0] == 250


HELOS = [
    ("client.test", 250),
    ("client.test.", 250),
    ("[192.0.2.1]", 250),
    ("[IPv6:2001:db8::1]", 250),
    ("win_host.example", 250),  # underscores are tolerated
    ("localhost", reply(550, "5.5.2", "HELO name must be a fully qualified domain name")),
    ("bad!name.example", reply(501, "5.5.2", "HELO name must be a domain name or an address literal")),
    ("192.0.2.1", reply(501, "5.5.2", "HELO name must be a domain name or an address literal")),
    ("-dash.example", reply(501, "5.5.2", "HELO name must be a domain name or an address literal")),
    ("mx.example.test", reply(550, "5.7.1", "You are not mx.example.test")),
    ("MX.EXAMPLE.TEST.", reply(550, "5.7.1", "You are not mx.example.test")),
    ("mail.example.test", reply(550, "5.7.1", "You are not mail.example.test")),
    # Our address, but the client really is at it (the tests connect from
    # 127.0.0.1): the truth, as smtplib says it on a host without an FQDN.
    ("[127.0.0.1]", 250),
]


@pytest.fixture(scope="module")
def helo_srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("helo"), plugins=[component("envelope-check", {
        "own_names": ["mail.example.test"], "require_fqdn": True, "check_sender_domain": False})])
    s.start()
    yield s
    s.stop()


@pytest.mark.parametrize("name,want", HELOS, ids=[h[0] for h in HELOS])
@pytest.mark.parametrize("verb", ["EHLO", "HELO"])
def test_helo(helo_srv, name, want, verb):
    with Raw(helo_srv.port) as c:
        assert c.reply()[0] == 220
        got = c.cmd(f"{verb} {name}")
        if want == 250:
            assert got[0] == 250, got
        else:
            assert got == want


@pytest.mark.parametrize("verb", ["EHLO", "HELO"])
def test_helo_claiming_our_address_from_another_is_refused(helo_srv, verb):
    """A client at 127.0.0.2 greeting with the server's address 127.0.0.1 lies."""
    sock = socket.create_connection(("127.0.0.1", helo_srv.port), timeout=10, source_address=("127.0.0.2", 0))
    c = Raw.__new__(Raw)
    c.sock, c.buf = sock, b""
    with c:
        assert c.reply()[0] == 220
        assert c.cmd(f"{verb} [127.0.0.1]") == reply(550, "5.7.1", "You are not [127.0.0.1]")
        assert c.cmd(f"{verb} [127.0.0.2]")[0] == 250


def test_local_mailboxes(start):
    s = start(plugins=[component("envelope-check", {
        "check_sender_domain": False,
        "mailboxes": ["alice@example.test", "@lists.example.test"],
    })], local_domains=["example.test", "lists.example.test"])
    c = greet(s.port)
    assert c.cmd("MAIL FROM:<x@client.test>")[0] == 250
    for ok in ("alice@example.test", "ALICE@Example.Test.", '"alice"@example.test', "anything@lists.example.test",
               "postmaster@example.test", "Postmaster", "bob@remote.example"):
        got = c.cmd(f"RCPT TO:<{ok}>")
        # A remote recipient passes this plugin; the host then refuses relay.
        assert got[0] == (554 if ok.endswith("remote.example") else 250), (ok, got)
    assert c.cmd("RCPT TO:<bob@example.test>") == \
        reply(550, "5.1.1", "<bob@example.test>: Recipient address rejected: User unknown")
