"""ip-access through the real server: allow/deny CIDR lists decide the
greeting (most specific match wins, a tie denies, `default` for the rest),
IPv4 and IPv6 clients, the refused session accepts only QUIT, and bad
entries are refused at load with the entry named
(plugins/ip-access/README.md)."""

import socket
import subprocess

import pytest
from harness import BIN, Raw, render_config
from pluginkit import component, plugin_logs, reply, wait_plugin_log


def denied(ip):
    return reply(554, "5.7.1", f"Access denied for {ip}")


# (allow, deny, default, greeting code for 127.0.0.1)
TABLE = [
    ([], [], "allow", 220),
    ([], ["127.0.0.1"], "allow", 554),
    ([], ["127.0.0.0/8"], "allow", 554),
    (["127.0.0.1"], ["127.0.0.0/8"], "allow", 220),  # the /32 allow is more specific
    (["127.0.0.0/8"], ["127.0.0.1/32"], "allow", 554),  # the /32 deny is more specific
    (["127.0.0.0/8"], ["127.0.0.0/8"], "allow", 554),  # a tie denies
    (["127.0.0.0/8"], [], "deny", 220),
    (["192.0.2.0/24"], [], "deny", 554),  # not listed: default
    (["::ffff:127.0.0.0/104"], [], "deny", 220),  # mapped form read as IPv4
    ([], ["::/0"], "allow", 220),  # an IPv6 catch-all does not cover IPv4
    ([], ["0.0.0.0/0", "::/0"], "allow", 554),
]


@pytest.mark.parametrize("allow,deny,default,code", TABLE)
def test_decision_table(start, allow, deny, default, code):
    srv = start(plugins=[component("ip-access", {"allow": allow, "deny": deny, "default": default})])
    with Raw(srv.port) as c:
        got = c.reply()
        if code == 220:
            assert got[0] == 220, got
        else:
            assert got == denied("127.0.0.1")


def test_refused_session_accepts_only_quit(start):
    srv = start(plugins=[component("ip-access", {"deny": ["127.0.0.0/8"]})])
    c = Raw(srv.port)
    assert c.reply() == denied("127.0.0.1")
    for cmd in ("EHLO client.test", "MAIL FROM:<a@client.test>", "RCPT TO:<b@example.test>"):
        assert c.cmd(cmd)[0] == 503
    assert c.cmd("QUIT")[0] == 221
    assert c.closed()
    lines = wait_plugin_log(srv, "ip-access", "client denied")
    assert lines[0][1] == [("client", "127.0.0.1"), ("rule", "127.0.0.0/8")]


def test_allowed_clients_are_not_logged(start):
    srv = start(plugins=[component("ip-access", {"allow": ["127.0.0.1"], "default": "deny"})])
    with Raw(srv.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("QUIT")[0] == 221
    assert plugin_logs(srv, "ip-access") == []


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "config,want",
    [
        ({"deny": ["::1"]}, "denied"),
        ({"deny": ["::/0"], "allow": ["::1/128"]}, 220),
        ({"deny": ["0.0.0.0/0"]}, 220),
        ({"allow": ["127.0.0.0/8"], "default": "deny"}, "denied"),
    ],
)
def test_ipv6_clients(start, config, want):
    if not ipv6_loopback():
        pytest.fail("this test needs the IPv6 loopback (::1)")
    srv = start(plugins=[component("ip-access", config)], listen=["[::1]:0"])
    with Raw(srv.port, host="::1") as c:
        got = c.reply()
        assert got == denied("::1") if want == "denied" else got[0] == 220, got


@pytest.mark.parametrize(
    "config,want",
    [
        ({"deny": ["10.1.2.3/8"]}, 'deny[0]: "10.1.2.3/8" has host bits set (did you mean "10.0.0.0/8"?)'),
        ({"allow": ["192.0.2.0/24", "192.0.2.300"]}, 'allow[1]: "192.0.2.300" is not an IP address or CIDR range'),
        ({"default": "deny"}, "would refuse every client"),
        ({"alow": []}, "unknown field `alow`"),
    ],
)
def test_bad_configuration_is_refused_at_load(tmp_path, config, want):
    path = tmp_path / "postern.toml"
    path.write_text(render_config(
        {"hostname": "mx.test", "listen": ["127.0.0.1:2525"], "local_domains": ["example.test"]},
        [component("ip-access", config)],
    ))
    r = subprocess.run([str(BIN), "check", "--config", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert 'plugin "ip-access"' in r.stderr and want in r.stderr, r.stderr
