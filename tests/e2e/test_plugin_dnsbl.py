"""dnsbl through the real server with an authoritative DNS server on
loopback answering for test zones: a listed client gets the 554 greeting
naming the zone (or 450 with action "defer", a custom reply, or only a log
line), NXDOMAIN is clean, SERVFAIL and a silent name server follow
on_dns_error (within the plugin's time limit), loopback is skipped by
default, an IPv6 client is looked up by its nibbles, and the kv cache spares
the second connection a DNS query (plugins/dnsbl/README.md)."""

import time

import pytest
from harness import DnsServer, Raw, ipv6_loopback
from pluginkit import component, greet, reply, wait_plugin_log

LISTED = "1.0.0.127"  # 127.0.0.1, octets reversed (RFC 5782 §2.1)
LISTED6 = ".".join("0" * 31 + "1")[::-1]  # ::1, its 32 nibbles reversed (RFC 5782 §2.4)


class Dns(DnsServer):
    """Answers with TTL 0, so the host's resolver cache keeps nothing and
    every look-up the plugin does not answer from its kv cache reaches us."""

    def _answer(self, request):
        r = super()._answer(request)
        for rr in r.rr:
            rr.ttl = 0
        return r


@pytest.fixture(scope="module")
def dns_server():
    d = Dns({
        (f"{LISTED}.bl.test", "A"): ["127.0.0.2"],
        (f"{LISTED}.codes.test", "A"): ["127.0.0.4"],
        (f"{LISTED}.refused.test", "A"): ["127.255.255.254"],
        (f"{LISTED}.hijacked.test", "A"): ["198.51.100.7"],
        ("other.clean.test", "A"): ["127.0.0.2"],  # the zone exists; our client is not listed
        (f"{LISTED6}.bl.test", "A"): ["127.0.0.2"],
    }, servfail=(f"{LISTED}.broken.test",), silent=(f"{LISTED}.silent.test",))
    yield d
    d.stop()


@pytest.fixture
def dns(dns_server):
    """The module's DNS server, with the queries of this test only."""
    dns_server.queries.clear()
    return dns_server


def dnsbl(zones, **config):
    cfg = {"zones": zones, "skip_networks": [], **config}
    return component("dnsbl", cfg, capabilities=["dns", "kv"])


def greeting(srv):
    c = Raw(srv.port)
    return c, c.reply()


def queries(dns, zone):
    return [n for n, t in dns.queries if n == f"{LISTED}.{zone}" and t == "A"]


def test_listed_client_gets_a_554_greeting_naming_the_zone(start, dns):
    srv = start(extra=dns.config(), plugins=[dnsbl([{"zone": "bl.test"}])])
    c, got = greeting(srv)
    assert got == reply(554, "5.7.1", "Service unavailable; client [127.0.0.1] blocked using bl.test")
    assert c.cmd("EHLO client.test")[0] == 503
    assert c.cmd("QUIT")[0] == 221
    lines = wait_plugin_log(srv, "dnsbl", "client listed")
    assert lines[0][1] == [("zone", "bl.test"), ("client_ip", "127.0.0.1"), ("code", "127.0.0.2")]


def test_defer_action_and_custom_reply(start, dns):
    srv = start(extra=dns.config(), plugins=[dnsbl([
        {"zone": "BL.Test.", "action": "defer", "reply": "Listed at {zone}: {ip} try later"}])])
    c, got = greeting(srv)
    # The plugin defers with 450 4.7.1; at connect the host sends a temporary
    # refusal as 421 (RFC 5321 §3.1), keeping the enhanced code and text.
    assert got == reply(421, "4.7.1", "Listed at bl.test: 127.0.0.1 try later")
    assert c.closed()


def test_log_action_lets_the_client_in(start, dns):
    srv = start(extra=dns.config(), plugins=[dnsbl([{"zone": "bl.test", "action": "log"}])])
    c, got = greeting(srv)
    assert got[0] == 220
    wait_plugin_log(srv, "dnsbl", "client listed")


@pytest.mark.parametrize(
    "zone,match,want",
    [
        ("clean.test", None, 220),  # NXDOMAIN: not listed
        ("unknown-zone.test", None, 220),
        ("codes.test", None, 554),  # any 127.0.0.0/8 code by default
        ("codes.test", ["127.0.0.2", "127.0.0.3"], 220),  # 127.0.0.4 does not match
        ("codes.test", ["127.0.0.4/30"], 554),
        ("refused.test", None, 220),  # 127.255.255.0/24: a DNSBL error, not a listing
        ("hijacked.test", None, 220),  # an answer outside 127/8 is not a listing
    ],
)
def test_answers(start, dns, zone, match, want):
    z = {"zone": zone} | ({"match": match} if match else {})
    srv = start(extra=dns.config(), plugins=[dnsbl([z])])
    _, got = greeting(srv)
    assert got[0] == want, got
    if want == 554:
        assert got[1].endswith(f"blocked using {zone}")
    assert queries(dns, zone) == [f"{LISTED}.{zone}"]


def test_zones_are_asked_in_order(start, dns):
    srv = start(extra=dns.config(), plugins=[dnsbl([{"zone": "clean.test"}, {"zone": "bl.test"}])])
    _, got = greeting(srv)
    assert got == reply(554, "5.7.1", "Service unavailable; client [127.0.0.1] blocked using bl.test")
    assert [n for n, _ in dns.queries if n.startswith(LISTED)] == [f"{LISTED}.clean.test", f"{LISTED}.bl.test"]


def test_servfail_passes_by_default(start, dns):
    srv = start(extra=dns.config(), plugins=[dnsbl([{"zone": "broken.test"}, {"zone": "bl.test", "action": "log"}])])
    _, got = greeting(srv)
    assert got[0] == 220
    lines = wait_plugin_log(srv, "dnsbl", "DNSBL look-up failed")
    assert ("zone", "broken.test") in lines[0][1]
    # The next zone was still asked.
    wait_plugin_log(srv, "dnsbl", "client listed")


def test_servfail_defers_when_asked_to(start, dns):
    srv = start(extra=dns.config(), plugins=[dnsbl([{"zone": "broken.test", "on_dns_error": "defer"}])])
    c, got = greeting(srv)
    assert got == reply(421, "4.4.3", "Temporary DNSBL failure (broken.test), try again later")
    assert c.closed()


def test_loopback_is_skipped_by_default(start, dns):
    srv = start(extra=dns.config(), plugins=[component("dnsbl", {"zones": [{"zone": "bl.test"}]},
                                                       capabilities=["dns", "kv"])])
    _, got = greeting(srv)
    assert got[0] == 220
    assert queries(dns, "bl.test") == []


def test_without_dns_capability_the_lookup_fails_open(start, dns):
    srv = start(extra=dns.config(), plugins=[component("dnsbl", {"zones": [{"zone": "bl.test"}],
                                                                 "skip_networks": []})])
    _, got = greeting(srv)
    assert got[0] == 220
    wait_plugin_log(srv, "dnsbl", "DNSBL look-up failed")


@pytest.mark.parametrize("zone,first", [("bl.test", 554), ("clean.test", 220)])
def test_kv_cache_spares_the_second_connection_a_query(start, dns, zone, first):
    srv = start(extra=dns.config(), plugins=[dnsbl([{"zone": zone}], cache_ttl=300)])
    for _ in range(3):
        c, got = greeting(srv)
        assert got[0] == first
        c.close()
    assert len(queries(dns, zone)) == 1, dns.queries


def test_without_the_cache_every_connection_queries(start, dns):
    srv = start(extra=dns.config(), plugins=[dnsbl([{"zone": "bl.test"}], cache_ttl=0)])
    for _ in range(2):
        c, got = greeting(srv)
        assert got[0] == 554
        c.close()
    assert len(queries(dns, "bl.test")) == 2, dns.queries


def test_clean_client_can_send(start, dns):
    srv = start(extra=dns.config(), plugins=[dnsbl([{"zone": "clean.test"}])])
    c = greet(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250


def timed_greeting(srv):
    started = time.monotonic()
    c, got = greeting(srv)
    return c, got, time.monotonic() - started


# The resolver's own time-out (5s, tried twice: the [dns] default) is far
# beyond the plugin's 2s: the host cuts the look-up short so that the plugin
# still answers, instead of the whole call timing out into 451 4.3.0.
def test_a_silent_name_server_passes_by_default_within_the_time_limit(start, dns):
    srv = start(extra=dns.config(timeout="5s"), plugins=[dnsbl([{"zone": "silent.test"}])])
    _, got, took = timed_greeting(srv)
    assert got[0] == 220, got
    assert took < 2.0, took
    assert set(queries(dns, "silent.test")) == {f"{LISTED}.silent.test"}  # (the resolver may ask again)
    lines = wait_plugin_log(srv, "dnsbl", "DNSBL look-up failed")
    assert ("zone", "silent.test") in lines[0][1] and ("error", "timeout") in lines[0][1], lines


def test_a_silent_name_server_defers_when_asked_to(start, dns):
    srv = start(extra=dns.config(timeout="5s"),
                plugins=[dnsbl([{"zone": "silent.test", "on_dns_error": "defer"}])])
    c, got, took = timed_greeting(srv)
    assert got == reply(421, "4.4.3", "Temporary DNSBL failure (silent.test), try again later")
    assert took < 2.0, took
    assert c.closed()


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_ipv6_client_is_looked_up_by_its_nibbles(start, dns):
    srv = start(extra=dns.config(), listen=["[::1]:0"], plugins=[dnsbl([{"zone": "bl.test"}])])
    c = Raw(srv.port, host="::1")
    assert c.reply() == reply(554, "5.7.1", "Service unavailable; client [::1] blocked using bl.test")
    assert queries6(dns, "bl.test") == [f"{LISTED6}.bl.test"]
    assert c.cmd("QUIT")[0] == 221


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_ipv6_loopback_is_skipped_by_default(start, dns):
    srv = start(extra=dns.config(), listen=["[::1]:0"],
                plugins=[component("dnsbl", {"zones": [{"zone": "bl.test"}]}, capabilities=["dns", "kv"])])
    c = Raw(srv.port, host="::1")
    assert c.reply()[0] == 220
    assert queries6(dns, "bl.test") == []


def queries6(dns, zone):
    return [n for n, t in dns.queries if n == f"{LISTED6}.{zone}" and t == "A"]
