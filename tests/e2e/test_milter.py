"""Milters in the policy chain (`[[milter]]`), through the real binary: the
chain asks plugins and milters in the order of the file; a milter's reply
codes become the client's replies; its end-of-message modifications (a
header added, a header changed, a recipient added) reach the spooled
message; a milter that dies or never answers costs the stage its
`on_error` within its timeout, loses nothing, and the next session works."""

import json
import time

from fakemilter import FakeMilter
from harness import ehlo, message, plugin, render_config
from test_metrics import scrape, value


def milter_toml(name, path, **settings):
    lines = ["[[milter]]", f'name = "{name}"', f'address = "unix:{path}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def plugin_toml(p):
    return render_config({}, [p]).replace("[server]\n", "", 1)


def test_chain_order_replies_and_modifications(start, tmp_path):
    m = FakeMilter(str(tmp_path / "m.sock"), reject_rcpt="both", change_subject="[checked] hi",
                   add_rcpt="copy@example.test")
    first = plugin("first", "test-rcpt-only", {"blocked": ["first", "both0"]})
    last = plugin("last", "test-rcpt-only", {"blocked": ["last", "both"]})
    # first, then the milter, then last.
    srv = start(plugins=[first], extra=milter_toml("scan", m.path) + plugin_toml(last))
    c = ehlo(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<first@example.test>") == (550, "5.1.1 first@example.test is blocked")
    assert c.cmd("RCPT TO:<both@example.test>") == (550, "5.7.1 milter says no")
    assert c.cmd("RCPT TO:<last@example.test>") == (550, "5.1.1 last@example.test is blocked")
    assert c.cmd("RCPT TO:<ok@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(message(subject="hi") + b".\r\n")
    code, text = c.reply()
    assert code == 250, text
    c.close()
    (qid,) = srv.queued()
    meta, data = srv.read_queued(qid)
    assert b"\r\nX-Milter: checked\r\n" in data
    assert b"\r\nSubject: [checked] hi\r\n" in data and b"Subject: hi\r\n" not in data
    rcpts = [r["address"] if isinstance(r, dict) else r for r in meta["recipients"]]
    assert "copy@example.test" in json.dumps(meta) and "ok@example.test" in json.dumps(meta), rcpts
    assert b"O" in m.commands and b"E" in m.commands
    m.stop()


def test_a_milter_that_dies_or_hangs_follows_on_error(start, tmp_path):
    dying = FakeMilter(str(tmp_path / "die.sock"), die_at_mail=True, add_header=None)
    srv = start(extra='[metrics]\nlisten = "127.0.0.1:0"\n' + milter_toml("dies", dying.path, command_timeout="2s"))
    for _ in range(2):      # the next session works the same way
        c = ehlo(srv.port)
        t0 = time.monotonic()
        code, text = c.cmd("MAIL FROM:<a@client.test>")
        assert (code, text) == (451, "4.3.0 Temporary policy failure, please try again later")
        assert time.monotonic() - t0 < 2
        c.close()
    assert dying.sessions == 2
    srv.wait_log(lambda r: r.get("milter") == "dies" and "milter failed" in r.get("message", ""))
    status = srv.admin("status").stdout
    assert f"milter dies             unix:{dying.path} on_error Tempfail: 6 calls, 2 failed" in status, status
    text = scrape(srv)
    assert value(text, "postern_milter_failures_total", milter="dies") == 2
    assert value(text, "postern_milter_verdicts_total", milter="dies", verdict="defer") == 2
    dying.stop()

    hanging = FakeMilter(str(tmp_path / "hang.sock"), hang_at_rcpt=True, add_header=None)
    srv = start(extra=milter_toml("hangs", hanging.path, command_timeout="1s", on_error="accept"))
    c = ehlo(srv.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    t0 = time.monotonic()
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 250          # on_error = accept
    assert 0.9 < time.monotonic() - t0 < 3
    assert c.cmd("DATA")[0] == 354
    c.send(message() + b".\r\n")
    assert c.reply()[0] == 250
    c.close()
    assert len(srv.queued()) == 1                               # nothing lost
    hanging.stop()
