"""relay-control through the real server: no address trick opens a relay for
an unauthorised client (554 5.7.1 "<address>: Relay access denied" from the
plugin), while relay_networks, authenticated sessions and recently
authenticated clients relay genuine remote recipients (over IPv6 too); kv
failures defer (plugins/relay-control/README.md)."""

import pytest
from harness import Raw, ipv6_loopback
from pluginkit import AUTH_LISTENER, auth_file, component, greet, login, reply

LOCAL = "example.test"


def relay(config=None, **settings):
    return component("relay-control", config or {}, **settings)


def denied(address):
    return reply(554, "5.7.1", f"{address}: Relay access denied")


def rcpt(port, address, session=None):
    c = session or greet(port)
    assert c.cmd("MAIL FROM:<sender@client.test>")[0] == 250
    return c.cmd(f"RCPT TO:<{address}>")


# (what the client sends inside RCPT TO:<...>, the address the host passes on)
TRICKS = [
    ("user@remote.example", "user@remote.example"),
    ("user%remote.example@example.test", "user%remote.example@example.test"),
    ("user%remote.example%third.example@example.test", "user%remote.example%third.example@example.test"),
    ('"user@remote.example"@example.test', '"user@remote.example"@example.test'),
    ('"user%remote.example"@example.test', '"user%remote.example"@example.test'),
    ("remote.example!user@example.test", "remote.example!user@example.test"),
    ('"remote.example!user"@example.test', '"remote.example!user"@example.test'),
    ("user@[127.0.0.1]", "user@[127.0.0.1]"),
    ("user@[IPv6:::1]", "user@[IPv6:::1]"),
    ("user@remote.example.", "user@remote.example."),
    ("USER@REMOTE.EXAMPLE", "USER@REMOTE.EXAMPLE"),
    ("user%remote.example@EXAMPLE.TEST.", "user%remote.example@EXAMPLE.TEST."),
    ("user%remote.example@Example.Test", "user%remote.example@Example.Test"),
    ("@example.test:user@remote.example", "user@remote.example"),
    ("@example.test,@other.example:user%remote.example@example.test", "user%remote.example@example.test"),
]


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """One server for the whole trick table: the default configuration
    (no relay_networks), so 127.0.0.1 may not relay."""
    from harness import Server

    srv = Server(tmp_path_factory.mktemp("relay"), plugins=[relay()], local_domains=[LOCAL])
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("sent,address", TRICKS, ids=[t[0] for t in TRICKS])
def test_no_trick_relays_for_an_unauthorised_client(strict, sent, address):
    assert rcpt(strict.port, sent) == denied(address)


@pytest.mark.parametrize("address", ["user@example.test", "User@EXAMPLE.TEST.", '"john smith"@example.test',
                                     "postmaster", "Postmaster@example.test"])
def test_local_recipients_pass(strict, address):
    assert rcpt(strict.port, address)[0] == 250


def test_relay_networks_relay_genuine_remote_recipients_only(start):
    srv = start(plugins=[relay({"relay_networks": ["127.0.0.0/8", "::1"]})])
    assert rcpt(srv.port, "user@remote.example")[0] == 250
    assert rcpt(srv.port, "user@[192.0.2.1]")[0] == 250
    # A trick in a local domain from an authorised client is passed on as a
    # local mailbox (never routed), so the host accepts it as local mail.
    assert rcpt(srv.port, "user%remote.example@example.test")[0] == 250


def test_other_networks_do_not_relay(start):
    srv = start(plugins=[relay({"relay_networks": ["10.0.0.0/8", "127.0.0.2"]})])
    assert rcpt(srv.port, "user@remote.example") == denied("user@remote.example")


def test_authenticated_sessions_relay(start):
    srv = start(plugins=[auth_file({"alice": "pw"}), relay()], listen=[], extra=AUTH_LISTENER)
    c = login(srv.port, "alice", "pw")
    assert rcpt(srv.port, "user@remote.example", c)[0] == 250
    assert c.cmd("RCPT TO:<user%other.example@example.test>")[0] == 250
    # The same client without AUTH is refused.
    assert rcpt(srv.port, "user@remote.example") == denied("user@remote.example")


def test_recently_authenticated_clients_relay(start):
    """The host remembers a successful AUTH in the kv namespace "auth"
    ([auth] remember_window); relay-control reads it with recent_auth_window."""
    srv = start(
        plugins=[
            auth_file({"alice": "pw"}),
            relay({"recent_auth_window": 600}, capabilities=["kv"], kv_namespace="auth"),
        ],
        listen=[], extra=AUTH_LISTENER + 'remember_window = "10m"\n',
    )
    assert rcpt(srv.port, "user@remote.example") == denied("user@remote.example")
    login(srv.port, "alice", "pw").cmd("QUIT")
    # A new, unauthenticated session from the same address may now relay.
    assert rcpt(srv.port, "user@remote.example")[0] == 250
    assert rcpt(srv.port, "user%remote.example@example.test")[0] == 250


def test_kv_failure_defers(start):
    # recent_auth_window needs the kv capability; without it the look-up is denied.
    srv = start(plugins=[relay({"recent_auth_window": 60})])
    assert rcpt(srv.port, "user@remote.example") == \
        reply(451, "4.3.0", "user@remote.example: Temporary relay check failure, try again later")
    assert rcpt(srv.port, "user@example.test")[0] == 250


def greet6(port):
    """A session from [::1]."""
    c = Raw(port, host="::1")
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.test")[0] == 250
    return c


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
@pytest.mark.parametrize("networks", [["::1/128"], ["10.0.0.0/8", "::1/128"], ["::/0"]])
def test_ipv6_client_in_relay_networks_relays(start, networks):
    srv = start(plugins=[relay({"relay_networks": networks})], listen=["[::1]:0"])
    c = greet6(srv.port)
    assert rcpt(srv.port, "user@remote.example", c)[0] == 250
    assert c.cmd("RCPT TO:<user@[IPv6:2001:db8::1]>")[0] == 250


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
@pytest.mark.parametrize("networks", [[], ["127.0.0.0/8"], ["::2/128", "2001:db8::/32"]])
def test_ipv6_client_outside_relay_networks_is_refused(start, networks):
    srv = start(plugins=[relay({"relay_networks": networks})], listen=["[::1]:0"])
    c = greet6(srv.port)
    assert rcpt(srv.port, "user@remote.example", c) == denied("user@remote.example")
    assert c.cmd("RCPT TO:<user@example.test>")[0] == 250
