"""The plugin-author examples (examples/plugins/{rust,python,javascript},
built by `make build`) loaded in the real server: each one's exact replies
over SMTP, the stages it exports, its configuration errors, and the
examples' toolchain pins staying those of the shipped plugins they reuse.
A missing component fails these tests (build it with `make plugins`)."""

import json
import re
import subprocess

import pytest
from harness import BIN, CACHE_DIR, ROOT, render_config
from pluginkit import component, greet, reply

EXAMPLES = ROOT / "examples" / "plugins"


def rcpt(port, recipient, sender="sender@client.test"):
    c = greet(port)
    assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    return c.cmd(f"RCPT TO:<{recipient}>")


def check(tmp_path, entry):
    """`postern check` on a configuration with this one plugin."""
    p = tmp_path / "check.toml"
    p.write_text(render_config({"hostname": "mx.example.test", "listen": ["127.0.0.1:2525"],
                                "local_domains": ["example.test"], "data_dir": str(tmp_path / "data")}, [entry],
                              f"[runtime]\ncache_dir = {json.dumps(str(CACHE_DIR))}\n"))
    r = subprocess.run([str(BIN), "check", "--config", str(p)], capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


# -- Rust: example-rcpt-blocklist (rcpt-to) -------------------------------------

def rust(config):
    return component("example-rcpt-blocklist", config)


def test_rust_refuses_listed_recipients(start):
    srv = start(plugins=[rust({"blocked": ["bob@example.test", "@old.example.test"]})])
    assert rcpt(srv.port, "bob@example.test") == reply(550, "5.7.1", "<bob@example.test>: Recipient refused by policy")
    assert rcpt(srv.port, "BOB@Example.Test") == reply(550, "5.7.1", "<BOB@Example.Test>: Recipient refused by policy")
    assert rcpt(srv.port, "x@old.example.test") == \
        reply(550, "5.7.1", "<x@old.example.test>: Recipient refused by policy")
    assert rcpt(srv.port, "alice@example.test") == reply(250, "2.1.5", "Recipient ok")
    # It passes, never accepts: relay stays refused by the host.
    assert rcpt(srv.port, "x@elsewhere.example")[0] == 554


def test_rust_exports_rcpt_to_and_checks_its_config(tmp_path):
    code, out = check(tmp_path, rust({"blocked": ["@old.example.test"]}))
    assert code == 0 and re.search(r"plugin example-rcpt-blocklist +\w+ stages: rcpt-to$", out, re.M), out
    code, out = check(tmp_path, rust({"blocked": ["bob"]}))
    assert code != 0 and '"bob" is neither user@domain nor @domain' in out, out
    code, out = check(tmp_path, rust({"blocked": [], "colour": "red"}))
    assert code != 0 and "unknown field `colour`" in out, out


# -- Python: example-sender-blocklist (mail-from) -------------------------------

def python(config):
    return component("example-sender-blocklist", config, max_memory="64MiB", timeout_ms=5000)


def test_python_refuses_senders_from_listed_domains(start):
    srv = start(plugins=[python({"blocked_domains": ["spam.example", "Junk.Example."]})])
    c = greet(srv.port)
    assert c.cmd("MAIL FROM:<x@spam.example>") == \
        reply(550, "5.7.1", "<x@spam.example>: Sender domain refused by policy")
    assert c.cmd("MAIL FROM:<Y@SPAM.EXAMPLE.>") == \
        reply(550, "5.7.1", "<Y@SPAM.EXAMPLE.>: Sender domain refused by policy")
    assert c.cmd("MAIL FROM:<z@junk.example>")[0] == 550
    assert c.cmd("MAIL FROM:<>") == reply(250, "2.1.0", "Sender ok")  # bounces flow
    assert c.cmd("RSET")[0] == 250
    assert c.cmd("MAIL FROM:<x@spam.example.net>") == reply(250, "2.1.0", "Sender ok")


def test_python_exports_mail_from_and_checks_its_config(tmp_path):
    code, out = check(tmp_path, python({"blocked_domains": ["spam.example"]}))
    assert code == 0 and re.search(r"plugin example-sender-blocklist +\w+ stages: mail-from$", out, re.M), out
    code, out = check(tmp_path, python({"blocked_domain": ["spam.example"]}))
    assert code != 0 and "unknown key(s): blocked_domain" in out, out
    code, out = check(tmp_path, python({"blocked_domains": "spam.example"}))
    assert code != 0 and "blocked_domains: a list of domain names" in out, out


# -- JavaScript: example-subject-filter (data) ----------------------------------

def javascript(config):
    return component("example-subject-filter", config, max_memory="64MiB", timeout_ms=5000)


def send(port, subject):
    c = greet(port)
    assert c.cmd("MAIL FROM:<sender@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<rcpt@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(f"From: <sender@client.test>\r\nSubject: {subject}\r\n\r\nHello.\r\n.\r\n")
    return c.reply()


def test_javascript_refuses_listed_subjects_and_tags_the_rest(start):
    srv = start(plugins=[javascript({"blocked_words": ["lottery", "Prize!"]})])
    assert send(srv.port, "You won the LOTTERY") == reply(554, "5.7.1", 'Message refused: subject contains "lottery"')
    assert send(srv.port, "a prize!!") == reply(554, "5.7.1", 'Message refused: subject contains "prize!"')
    code, text = send(srv.port, "Minutes of the meeting")
    assert code == 250 and text.startswith("2.0.0 Ok: queued as "), (code, text)
    _, message = srv.read_queued(text.rsplit(" ", 1)[1])
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert b"X-Subject-Filter: checked" in head, head


def test_javascript_exports_data_and_checks_its_config(tmp_path):
    code, out = check(tmp_path, javascript({"blocked_words": ["lottery"]}))
    assert code == 0 and re.search(r"plugin example-subject-filter +\w+ stages: data$", out, re.M), out
    code, out = check(tmp_path, javascript({"blocked_words": ["two words"]}))
    assert code != 0 and "blocked_words: a list of printable ASCII words" in out, out
    code, out = check(tmp_path, javascript({"words": []}))
    assert code != 0 and "unknown key(s): words" in out, out


# -- the examples reuse the shipped plugins' toolchains -------------------------

def test_toolchain_pins_match_the_shipped_plugins():
    # One componentize-py pin (plugins/build-lib.sh) for every Python plugin.
    pin = re.compile(r'^COMPONENTIZE_PY_VERSION="([^"]+)"$', re.M)
    assert len(pin.findall((ROOT / "plugins" / "build-lib.sh").read_text())) == 1
    for script in (EXAMPLES / "python" / "build.sh", ROOT / "plugins" / "greylist" / "build.sh"):
        text = script.read_text()
        assert not pin.findall(text) and "postern_componentize_py" in text, script
    ours = json.loads((EXAMPLES / "javascript" / "package.json").read_text())["devDependencies"]
    theirs = json.loads((ROOT / "plugins" / "header-filter" / "package.json").read_text())["devDependencies"]
    assert ours == theirs, (ours, theirs)
