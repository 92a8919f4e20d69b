"""vrfy-expn through the real server: "off" answers for everyone by default
and for untrusted clients in trusted mode, real answers from the
configuration for trusted clients (networks or AUTH), the per-client rate
limit shared by VRFY and EXPN across sessions, and the fail-safe 451 without
the kv capability (plugins/vrfy-expn/README.md)."""

import pytest
from pluginkit import AUTH_LISTENER, auth_file, component, greet, login, plugin_logs, reply, wait_plugin_log

VRFY_OFF = reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")
EXPN_OFF = reply(502, "5.5.1", "EXPN is disabled")
DIRECTORY = {
    "mailboxes": ["jane@example.test", "bob@example.test", "bob@other.test"],
    "lists": {"staff": ["jane@example.test", "bob@example.test"], "all@example.test": ["jane@example.test"]},
}


def vrfy_expn(config=None, **settings):
    return component("vrfy-expn", config or {}, **({"capabilities": ["kv"]} | settings))


def test_off_by_default(start):
    # access-log records who decided each reply: the plugin, not the host's
    # identical defaults.
    srv = start(plugins=[component("access-log"), vrfy_expn()])
    c = greet(srv.port)
    assert c.cmd("VRFY jane@example.test") == VRFY_OFF
    assert c.cmd("VRFY jane") == VRFY_OFF
    assert c.cmd("EXPN staff") == EXPN_OFF
    assert c.cmd("EXPN nobody") == EXPN_OFF
    lines = wait_plugin_log(srv, "access-log", "smtp", count=5)
    decided = [(dict(f)["stage"], dict(f)["decided_by"]) for _, f in plugin_logs(srv, "access-log", "smtp")
               if dict(f)["stage"] in ("vrfy", "expn")]
    assert decided == [("vrfy", "vrfy-expn")] * 2 + [("expn", "vrfy-expn")] * 2, (decided, lines)


TRUSTED_TABLE = [
    ("VRFY jane@example.test", reply(250, "2.1.5", "<jane@example.test>")),
    ("VRFY <JANE@Example.Test.>", reply(250, "2.1.5", "<jane@example.test>")),
    ("VRFY Jane Doe <jane@example.test>", reply(250, "2.1.5", "<jane@example.test>")),
    ("VRFY jane", reply(250, "2.1.5", "<jane@example.test>")),
    ("VRFY bob", reply(553, "5.1.4", "User ambiguous")),
    ("VRFY staff", reply(550, "5.1.1", "That is a mailing list, not a user")),
    ("VRFY carol@example.test", reply(550, "5.1.1", "Mailbox unknown")),
    ("EXPN staff", reply(250, "2.1.5", "<jane@example.test>, <bob@example.test>")),
    ("EXPN STAFF", reply(250, "2.1.5", "<jane@example.test>, <bob@example.test>")),
    ("EXPN all@example.test", reply(250, "2.1.5", "<jane@example.test>")),
    ("EXPN jane@example.test", reply(550, "5.1.1", "That is a user name, not a mailing list")),
    ("EXPN nobody", reply(550, "5.1.1", "Mailing list unknown")),
]


@pytest.fixture(scope="module")
def trusted(tmp_path_factory):
    from harness import Server

    cfg = {"mode": "trusted", "trusted_networks": ["127.0.0.0/8"], "rate_limit": 0, **DIRECTORY}
    srv = Server(tmp_path_factory.mktemp("vrfy"), plugins=[vrfy_expn(cfg)])
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("command,want", TRUSTED_TABLE, ids=[t[0] for t in TRUSTED_TABLE])
def test_trusted_network_answers(trusted, command, want):
    assert greet(trusted.port).cmd(command) == want


def test_untrusted_clients_get_the_off_answers(start):
    srv = start(plugins=[vrfy_expn({"mode": "trusted", "trusted_networks": ["10.0.0.0/8"], **DIRECTORY})])
    c = greet(srv.port)
    assert c.cmd("VRFY jane@example.test") == VRFY_OFF
    assert c.cmd("VRFY nobody@example.test") == VRFY_OFF
    assert c.cmd("EXPN staff") == EXPN_OFF


def test_authenticated_clients_are_trusted(start):
    srv = start(plugins=[auth_file({"alice": "pw"}), vrfy_expn({"mode": "trusted", **DIRECTORY})],
                listen=[], extra=AUTH_LISTENER)
    assert greet(srv.port).cmd("EXPN staff") == EXPN_OFF
    c = login(srv.port, "alice", "pw")
    assert c.cmd("EXPN staff") == reply(250, "2.1.5", "<jane@example.test>, <bob@example.test>")
    assert c.cmd("VRFY jane") == reply(250, "2.1.5", "<jane@example.test>")


def test_rate_limit_counts_vrfy_and_expn_per_client_across_sessions(start):
    srv = start(plugins=[vrfy_expn({"rate_limit": 3, "rate_window": 60})])
    c = greet(srv.port)
    assert c.cmd("VRFY a") == VRFY_OFF
    assert c.cmd("EXPN b") == EXPN_OFF
    c.close()
    c = greet(srv.port)
    assert c.cmd("VRFY c") == VRFY_OFF
    slow = reply(450, "4.7.1", "Too many VRFY/EXPN requests, slow down")
    assert c.cmd("VRFY d") == slow
    assert c.cmd("EXPN e") == slow


def test_without_kv_the_rate_limit_fails_safe(start):
    srv = start(plugins=[vrfy_expn(capabilities=[])])
    c = greet(srv.port)
    unavailable = reply(451, "4.3.0", "VRFY/EXPN temporarily unavailable, try again later")
    assert c.cmd("VRFY jane") == unavailable
    assert c.cmd("EXPN staff") == unavailable
    # With the limit off, no kv is needed.
    srv = start(plugins=[vrfy_expn({"rate_limit": 0}, capabilities=[])])
    assert greet(srv.port).cmd("VRFY jane") == VRFY_OFF
