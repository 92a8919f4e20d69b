"""access-log through the real server: one "smtp" line per stage outcome
with the documented fields in order and the replies actually sent
(including those decided by the host and by other plugins), AUTH without
argument or credentials, the stage filter, include_arguments, and config
errors at load (plugins/access-log/README.md)."""

import subprocess

import pytest
from harness import BIN, Raw, message, render_config
from pluginkit import AUTH_LISTENER, auth_file, component, greet, plain, plugin_logs, wait_plugin_log

FIELDS = ["session", "client", "helo", "stage", "argument", "code", "enhanced", "text", "decided_by", "auth_user",
          "tls", "mail_from", "rcpt_count"]


def lines(srv):
    return [dict(f) | {"_keys": [k for k, _ in f]} for _, f in plugin_logs(srv, "access-log", "smtp")]


def test_one_line_per_stage_with_every_field(start):
    srv = start(plugins=[component("access-log"), component("relay-control")])
    c = Raw(srv.port)
    assert c.reply()[0] == 220
    port = c.sock.getsockname()[1]
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<alice@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<x@remote.example>")[0] == 554
    assert c.cmd("VRFY bob")[0] == 252
    assert c.cmd("DATA")[0] == 354
    c.send(message() + b".\r\n")
    code, text = c.reply()
    assert code == 250
    assert c.cmd("QUIT")[0] == 221
    wait_plugin_log(srv, "access-log", "smtp", count=8)
    got = lines(srv)
    assert [g["stage"] for g in got] == ["connect", "helo", "mail-from", "rcpt-to", "rcpt-to", "vrfy", "data",
                                         "disconnect"]
    for g in got:
        assert g["_keys"] == FIELDS, g
        assert g["client"] == f"127.0.0.1:{port}"
        assert g["tls"] == "none" and g["auth_user"] == ""
    connect, helo, mail, rcpt_ok, rcpt_no, vrfy, data, bye = got
    assert len({g["session"] for g in got}) == 1
    assert (connect["helo"], connect["code"], connect["decided_by"]) == ("", "220", "host")
    assert (helo["argument"], helo["helo"], helo["code"]) == ("client.test", "client.test", "250")
    # Outcomes are observed after the stage took effect: the accepted sender
    # and recipients are already in the snapshot.
    assert (mail["argument"], mail["code"], mail["mail_from"]) == ("alice@client.test", "250", "alice@client.test")
    assert (rcpt_ok["argument"], rcpt_ok["code"], rcpt_ok["rcpt_count"]) == ("bob@example.test", "250", "1")
    assert (rcpt_no["rcpt_count"], connect["mail_from"], bye["mail_from"]) == ("1", "", "")
    assert (rcpt_no["code"], rcpt_no["enhanced"], rcpt_no["decided_by"]) == ("554", "5.7.1", "relay-control")
    assert rcpt_no["text"] == "x@remote.example: Relay access denied"
    assert (vrfy["argument"], vrfy["code"]) == ("bob", "252")
    assert (data["code"], data["enhanced"], data["rcpt_count"]) == ("250", "2.0.0", "1")
    assert text == f"2.0.0 {data['text']}" and data["text"].startswith("Ok: queued as ")
    assert (bye["code"], bye["text"]) == ("0", "")


def test_auth_lines_carry_no_argument_or_credentials(start):
    srv = start(plugins=[component("access-log"), auth_file({"alice": "s3cret-pw"})], listen=[], extra=AUTH_LISTENER)
    c = greet(srv.port)
    assert c.cmd(f"AUTH PLAIN {plain('alice', 'wrong-pw')}")[0] == 535
    assert c.cmd(f"AUTH PLAIN {plain('alice', 's3cret-pw')}")[0] == 235
    assert c.cmd("MAIL FROM:<>")[0] == 250
    c.cmd("QUIT")
    wait_plugin_log(srv, "access-log", "smtp", count=5)
    auths = [g for g in lines(srv) if g["stage"] == "auth"]
    assert [(a["code"], a["decided_by"]) for a in auths] == [("535", "auth-file"), ("235", "auth-file")]
    for a in auths:
        assert "argument" not in a["_keys"]
    mail = [g for g in lines(srv) if g["stage"] == "mail-from"][0]
    assert mail["auth_user"] == "alice" and mail["argument"] == ""
    log = "\n".join(srv.raw_log)
    assert "s3cret-pw" not in log and "wrong-pw" not in log


def test_stage_filter_and_no_arguments(start):
    srv = start(plugins=[component("access-log", {"stages": ["Connect", "rcpt_to", "disconnect"],
                                                   "include_arguments": False})])
    c = greet(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    c.cmd("RCPT TO:<b@example.test>")
    c.cmd("QUIT")
    wait_plugin_log(srv, "access-log", "smtp", count=3)
    got = lines(srv)
    assert [g["stage"] for g in got] == ["connect", "rcpt-to", "disconnect"]
    for g in got:
        assert g["_keys"] == [k for k in FIELDS if k != "argument"]


@pytest.mark.parametrize(
    "config,want",
    [
        ({"stages": ["connect", "rcpt"]},
         'stages[1]: unknown stage "rcpt" (known: connect, helo, auth, mail-from, rcpt-to, data, vrfy, expn, '
         'disconnect)'),
        ({"stages": []}, "stages"),
        ({"verbose": True}, "unknown field `verbose`"),
    ],
)
def test_bad_configuration_is_refused_at_load(tmp_path, config, want):
    path = tmp_path / "postern.toml"
    path.write_text(render_config(
        {"hostname": "mx.test", "listen": ["127.0.0.1:2525"], "local_domains": ["example.test"]},
        [component("access-log", config)],
    ))
    r = subprocess.run([str(BIN), "check", "--config", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert 'plugin "access-log"' in r.stderr and want in r.stderr, r.stderr
