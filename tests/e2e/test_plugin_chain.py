"""Plugins at every stage through the real server: the context each hook
sees, every verdict's reply, chain order, export detection, misbehaving
plugins (trap, endless loop, memory hog) and shadow mode."""

import smtplib

import pytest
from harness import Raw, ehlo, message, plugin


def probe(tag, rules=(), fail=(), headers=(), **settings):
    return plugin(tag, "test-probe", {"tag": tag, "rules": list(rules), "fail": list(fail), "headers": list(headers)}, **settings)


def rule(stage, kind, code=0, enhanced="", text="", contains=""):
    return {"stage": stage, "kind": kind, "code": code, "enhanced": enhanced, "text": text, "contains": contains}


def test_every_stage_sees_the_right_context(start):
    srv = start(plugins=[probe("p", headers=[["X-Probe", "seen"]])])
    c = Raw(srv.port)
    assert c.reply()[0] == 220
    local_port = c.sock.getsockname()[1]
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<alice@client.test> SIZE=1234 BODY=8BITMIME")
    c.cmd("RCPT TO:<bob@example.test>")
    c.cmd("RCPT TO:<carol@EXAMPLE.test>")
    c.cmd("VRFY bob")
    c.cmd("EXPN staff")
    c.cmd("DATA")
    c.send(message(subject="hello probe", body="body text\r\n") + b".\r\n")
    code, text = c.reply()
    assert code == 250
    c.cmd("QUIT")
    srv.wait_log(lambda r: "Stage::Disconnect" in str(r.get("message")))
    calls = srv.probe_calls("p")
    stages = [x["stage"] for x in calls if x["stage"] != "outcome"]
    assert stages == ["connect", "helo", "mail-from", "rcpt-to", "rcpt-to", "vrfy", "expn", "data"]
    by = {x["stage"]: x for x in calls}
    s = by["connect"]["session"]
    assert s["client_ip"] == "127.0.0.1" and s["client_port"] == local_port
    assert s["local_port"] == srv.port and s["server_name"] == "mx.example.test"
    assert s["listener"] == "smtp" and s["helo"] is None and s["tls"] is None
    helo = by["helo"]
    assert helo["arg"] == {"name": "client.test", "extended": True}
    assert helo["session"]["helo"] == "client.test" and helo["session"]["esmtp"] is True
    mf = by["mail-from"]
    assert mf["arg"]["address"] == "alice@client.test"
    assert mf["arg"]["params"] == [["SIZE", "1234"], ["BODY", "8BITMIME"]]
    assert mf["session"]["mail_from"] is None
    rcpts = [x for x in calls if x["stage"] == "rcpt-to"]
    assert rcpts[0]["arg"]["is_local"] is True and rcpts[0]["session"]["recipients"] == []
    assert rcpts[0]["session"]["mail_from"]["address"] == "alice@client.test"
    assert [r["address"] for r in rcpts[1]["session"]["recipients"]] == ["bob@example.test"]
    data = by["data"]
    assert data["arg"]["subject"] == "hello probe"
    assert data["arg"]["body_start"] == "body text\r\n"
    assert len(data["session"]["recipients"]) == 2
    assert by["vrfy"]["arg"] == "bob" and by["expn"]["arg"] == "staff"
    _, msg = srv.read_queued(text.rsplit(" ", 1)[1])
    assert b"\r\nX-Probe: seen\r\n" in msg.split(b"\r\n\r\n")[0] + b"\r\n"
    # Outcome observations carry the decided replies, then the disconnect.
    outcomes = [x["arg"] for x in calls if x["stage"] == "outcome"]
    assert [o["code"] for o in outcomes[:3]] == [220, 250, 250]
    assert outcomes[-1]["stage"] == "Stage::Disconnect"


@pytest.mark.parametrize(
    "stage,command",
    [
        ("helo", "EHLO client.test"),
        ("mail-from", "MAIL FROM:<a@client.test>"),
        ("rcpt-to", "RCPT TO:<b@example.test>"),
        ("vrfy", "VRFY b"),
        ("expn", "EXPN b"),
    ],
)
@pytest.mark.parametrize(
    "kind,code,enhanced,closes",
    [("reject", 550, "5.7.1", False), ("defer", 450, "4.7.1", False), ("disconnect", 421, "4.7.0", True)],
)
def test_verdict_replies(start, stage, command, kind, code, enhanced, closes):
    srv = start(plugins=[probe("p", [rule(stage, kind, code, enhanced, f"{kind} at {stage}")])])
    c = Raw(srv.port)
    c.reply()
    if stage != "helo":
        c.cmd("EHLO client.test")
    if stage == "rcpt-to":
        c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd(command) == (code, f"{enhanced} {kind} at {stage}")
    assert c.closed(1.0) == closes


def test_verdicts_at_connect(start):
    srv = start(plugins=[probe("p", [rule("connect", "reject", 554, "5.7.1", "go away")])])
    c = Raw(srv.port)
    assert c.reply() == (554, "5.7.1 go away")
    # Only QUIT is accepted afterwards (RFC 5321 3.1).
    assert c.cmd("EHLO client.test")[0] == 503
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 503
    assert c.cmd("QUIT")[0] == 221
    srv2 = start(plugins=[probe("p", [rule("connect", "defer", 450, "4.7.1", "later")])])
    c = Raw(srv2.port)
    assert c.reply() == (421, "4.7.1 later")
    assert c.closed()


def test_data_verdicts_and_accept_with(start):
    srv = start(plugins=[probe("p", [
        rule("data", "reject", 554, "5.7.0", "spam", contains="spam"),
        rule("data", "defer", 451, "4.7.0", "later", contains="later"),
        rule("vrfy", "accept-with", 250, "2.1.5", "Bob <bob@example.test>"),
    ])])
    c = ehlo(srv.port)
    for subject, want in [("spam offer", 554), ("later please", 451), ("fine", 250)]:
        c.cmd("MAIL FROM:<a@client.test>")
        c.cmd("RCPT TO:<b@example.test>")
        c.cmd("DATA")
        c.send(message(subject=subject) + b".\r\n")
        assert c.reply()[0] == want
    assert len(srv.queued()) == 1
    assert c.cmd("VRFY bob") == (250, "2.1.5 Bob <bob@example.test>")


def test_accept_grants_relay_and_chain_order(start):
    # first: rejects "blocked"; second: accepts (relays) anything at relay.test.
    srv = start(plugins=[
        plugin("blocker", "test-rcpt-only", {"blocked": ["blocked"]}),
        probe("granter", [rule("rcpt-to", "accept", contains="@relay.test"),
                          rule("rcpt-to", "reject", 550, "5.1.1", "second says no", contains="nobody")]),
    ])
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<blocked@relay.test>") == (550, "5.1.1 blocked@relay.test is blocked")
    assert c.cmd("RCPT TO:<friend@relay.test>")[0] == 250
    assert c.cmd("RCPT TO:<nobody@example.test>") == (550, "5.1.1 second says no")
    assert c.cmd("RCPT TO:<other@elsewhere.test>")[0] == 554
    # The rcpt-only plugin exports one stage, and the host found exactly that
    # (the greeting and EHLO above went through without calling it).
    loaded = [r for r in srv.log_records() if r.get("message") == "plugin loaded"]
    stages = {r["plugin"]: r["stages"] for r in loaded}
    assert stages["blocker"] == '["rcpt-to"]'


@pytest.mark.parametrize("how", ["trap", "loop", "alloc"])
def test_misbehaving_plugin_costs_one_tempfail(start, how):
    srv = start(plugins=[probe("bad", fail=[rule("rcpt-to", how, contains="boom")], timeout_ms=300, max_memory="16MiB")])
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    code, text = c.cmd("RCPT TO:<boom@example.test>")
    assert (code, text) == (451, "4.3.0 Temporary policy failure, please try again later")
    # The same session continues with a fresh instance.
    assert c.cmd("RCPT TO:<fine@example.test>")[0] == 250
    # The next connection is served normally.
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        assert s.sendmail("a@client.test", ["ok@example.test"], message()) == {}
    rec = srv.wait_log(lambda r: r.get("plugin") == "bad" and r.get("error_kind") is not None)
    assert rec["stage"] == "rcpt-to"
    assert rec["error_kind"] == {"trap": "trap", "loop": "timeout", "alloc": "memory"}[how]


@pytest.mark.parametrize("on_error,want", [("fail-open", 250), ("fail-closed", 554)])
def test_on_error_settings(start, on_error, want):
    srv = start(plugins=[probe("bad", fail=[rule("rcpt-to", "trap")], on_error=on_error)])
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<x@example.test>")[0] == want


def test_invalid_reply_is_a_plugin_error(start):
    # A "reject" with a 2xx code is invalid: counted as an error → 451.
    srv = start(plugins=[probe("p", [rule("rcpt-to", "reject", 250, "", "not really")])])
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<x@example.test>")[0] == 451
    rec = srv.wait_log(lambda r: r.get("error_kind") == "invalid")
    assert "5xx" in rec["message"]


def test_shadow_mode_logs_but_does_not_enforce(start):
    srv = start(plugins=[probe("shadowy", [rule("rcpt-to", "reject", 550, "5.7.1", "would reject")], mode="shadow")])
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<x@example.test>")[0] == 250
    rec = srv.wait_log(lambda r: r.get("shadow_verdict") == "reject")
    assert rec["plugin"] == "shadowy" and rec["reply"] == "550 5.7.1 would reject"


def test_plugins_get_no_filesystem_environment_or_network_and_stdout_is_logged(start):
    import socket as _socket

    with _socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        srv = start(plugins=[plugin("sb", "test-probe", {"tag": "sb", "sandbox": port})])
        ehlo(srv.port).cmd("QUIT")
        (report,) = srv.probe_calls("sb", "sandbox")
        listener.settimeout(0.5)
        with pytest.raises(_socket.timeout):
            listener.accept()  # nothing connected from inside the plugin
    r = report["arg"]
    assert r["fs_root"].startswith("Err(") and r["passwd"].startswith("Err("), r
    assert r["env"] == 0 and r["args"] == 0, r
    assert r["tcp"].startswith("Err("), r
    for stream in ("stdout", "stderr"):
        out = srv.wait_log(lambda x: x.get("stream") == stream)
        assert out["plugin"] == "sb" and out["message"] == f"probe says hello on {stream}"


def test_a_component_built_from_a_stale_wit_is_refused_at_load(start):
    """tests/plugins/stale-contract names postern:policy@0.2.0 but its
    `reply` record lacks `enhanced` (a stale copy of the WIT). It links (every
    import it uses exists), so only a structural check of its export finds
    it: `postern check`, a reload and a start all refuse it, naming the
    plugin, the contract, the interface and the difference; the running
    generation keeps serving."""
    stale = plugin("stale", "test-stale-contract")
    good = probe("good", [rule("vrfy", "accept-with", 250, "2.1.5", "good answer")])
    srv = start(plugins=[good])

    def vrfy():
        c = ehlo(srv.port)
        r = c.cmd("VRFY someone")
        c.close()
        return r

    assert vrfy() == (250, "2.1.5 good answer")
    srv.write_config([stale, good])
    for command in ("check", "reload"):
        r = srv.admin(command)
        assert r.returncode == 1, (command, r.stdout)
        err = r.stderr
        assert 'plugin "stale"' in err and "does not match postern:policy@0.2.0" in err, err
        assert "vrfy-hook" in err and "type mismatch" in err, err
    assert vrfy() == (250, "2.1.5 good answer")     # generation 1 still serves
    assert "generation 1 " in srv.admin("status").stdout
    srv.stop()
    with pytest.raises(RuntimeError) as e:
        srv.start()
    assert 'plugin "stale"' in str(e.value) and "vrfy-hook" in str(e.value)


def test_a_component_importing_a_stale_interface_is_refused_at_load(start):
    """tests/plugins/stale-import names postern:policy@0.2.0 and its export
    matches, but its `kv.get` import returns a bare option (a stale WIT on
    the import side). check and reload refuse it as a contract mismatch
    naming the interface, the function and the difference; the running
    generation keeps serving."""
    stale = plugin("stale", "test-stale-import", capabilities=["kv"])
    good = probe("good", [rule("vrfy", "accept-with", 250, "2.1.5", "good answer")])
    srv = start(plugins=[good])
    srv.write_config([stale, good])
    for command in ("check", "reload"):
        r = srv.admin(command)
        assert r.returncode == 1, (command, r.stdout)
        err = r.stderr
        assert 'plugin "stale"' in err and "does not match postern:policy@0.2.0" in err, err
        assert "import: component imports instance `postern:policy/kv@0.2.0`" in err, err
        assert "`get` has the wrong type" in err and "expected `result` found `option`" in err, err
    c = ehlo(srv.port)
    assert c.cmd("VRFY someone") == (250, "2.1.5 good answer")
    c.close()
    assert "generation 1 " in srv.admin("status").stdout
