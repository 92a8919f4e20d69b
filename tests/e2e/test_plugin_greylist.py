"""greylist (the Python component, target/plugins/greylist.wasm) through the
real server: a new triplet is deferred with 451 4.7.1, the same triplet
passes after `delay`, other triplets are greylisted on their own, the kv
state spans sessions, whitelisted networks and authenticated sessions are
never greylisted, and no kv capability fails safe
(plugins/greylist/README.md). The component must be built (`make plugins`);
a missing one fails these tests."""

import time

import pytest
from pluginkit import AUTH_LISTENER, auth_file, component, greet, login, reply

UNAVAILABLE = reply(451, "4.7.1", "Greylisting temporarily unavailable")


def greylist(config=None, **settings):
    cfg = {"delay": 1, "whitelist_networks": [], **(config or {})}
    return component("greylist", cfg, **({"capabilities": ["kv"], "max_memory": "64MiB", "timeout_ms": 5000}
                                         | settings))


def greylisted(seconds=1):
    return reply(451, "4.7.1", f"Greylisted, please try again in {seconds} seconds")


def rcpt(port, sender, recipient, session=None):
    c = session or greet(port)
    assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    return c.cmd(f"RCPT TO:<{recipient}>")


def test_first_contact_is_deferred_then_the_retry_passes(start):
    srv = start(plugins=[greylist()])
    assert rcpt(srv.port, "alice@client.test", "bob@example.test") == greylisted(1)
    # An early retry (from another session) is still deferred.
    assert rcpt(srv.port, "alice@client.test", "bob@example.test") == greylisted(1)
    time.sleep(1.2)
    assert rcpt(srv.port, "alice@client.test", "bob@example.test")[0] == 250
    # Case does not make a new triplet.
    assert rcpt(srv.port, "Alice@Client.Test", "BOB@example.test")[0] == 250
    # Every other triplet is greylisted on its own.
    assert rcpt(srv.port, "carol@client.test", "bob@example.test") == greylisted(1)
    assert rcpt(srv.port, "alice@client.test", "dave@example.test") == greylisted(1)
    assert rcpt(srv.port, "", "bob@example.test") == greylisted(1)
    lines = [r for r in srv.log_records() if r.get("plugin") == "greylist" and r.get("message") == "greylisted new triplet"]
    assert len(lines) == 4, lines


def test_pass_leaves_relay_to_the_host(start):
    # After greylisting, a remote recipient is still refused: greylist passes,
    # it never accepts (which would grant relay).
    srv = start(plugins=[greylist()])
    assert rcpt(srv.port, "a@client.test", "x@remote.example") == greylisted(1)
    time.sleep(1.2)
    code, text = rcpt(srv.port, "a@client.test", "x@remote.example")
    assert (code, text.split(" ", 1)[0]) == (554, "5.7.1"), text


def test_whitelisted_networks_and_authenticated_sessions_pass(start):
    srv = start(plugins=[greylist({"whitelist_networks": ["127.0.0.0/8"]})])
    assert rcpt(srv.port, "a@client.test", "b@example.test")[0] == 250
    srv = start(plugins=[auth_file({"alice": "pw"}), greylist({"delay": 300})], listen=[], extra=AUTH_LISTENER)
    assert rcpt(srv.port, "a@client.test", "b@example.test") == greylisted(300)
    assert rcpt(srv.port, "a@client.test", "b@example.test", login(srv.port, "alice", "pw"))[0] == 250


def test_without_kv_every_recipient_is_deferred(start):
    srv = start(plugins=[greylist(capabilities=[])])
    assert rcpt(srv.port, "a@client.test", "b@example.test") == UNAVAILABLE


@pytest.mark.parametrize("config,want", [({"delay": -1}, "delay"), ({"dealy": 5}, "dealy")])
def test_bad_configuration_is_refused(start, config, want):
    with pytest.raises(RuntimeError) as e:
        start(plugins=[greylist(config)])
    assert 'plugin "greylist"' in str(e.value) and want in str(e.value)
