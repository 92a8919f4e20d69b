"""Recording sessions and replaying them offline (`[record]`, `postern
replay`), through the real binary: a few hundred sessions recorded from live
SMTP traffic (sender domains checked in DNS by envelope-check, recipients by
a blocklist plugin), replayed with the DNS server gone (answers come from
the recording): the same configuration gives 0 differences; a configuration
with one rule changed gives exactly the expected differences, at the
expected stage, both against the recording and against the old
configuration; the threshold decides the exit status."""

import json
import stat
import subprocess
import threading

import pytest
from harness import BIN, DnsServer, ehlo, message, plugin, render_config
from pluginkit import component

SESSIONS = 300
RECIPIENTS = ["alice", "bob", "carol"]


def good_domain(i):
    return i % 5 != 0


def chain(blocked):
    return [
        component("envelope-check", {"check_sender_domain": True, "reject_invalid_helo": False},
                  capabilities=["dns"]),
        plugin("blocklist", "test-rcpt-only", {"blocked": blocked}),
    ]


def session(port, i):
    c = ehlo(port)
    domain = "mx.example.net" if good_domain(i) else f"nx{i}.example.net"
    code = c.cmd(f"MAIL FROM:<s{i}@{domain}>")[0]
    if code == 250:
        rcpt = RECIPIENTS[i % 3]
        if c.cmd(f"RCPT TO:<{rcpt}@example.test>")[0] == 250:
            assert c.cmd("DATA")[0] == 354
            c.send(message(subject=f"s{i}") + b".\r\n")
            assert c.reply()[0] == 250
    c.cmd("QUIT")
    c.close()
    return code


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Record SESSIONS sessions; return (recording dir, base config text)."""
    from harness import Server

    tmp = tmp_path_factory.mktemp("replay")
    dns = DnsServer({("mx.example.net", "MX"): [(10, "mail.mx.example.net")]})
    extra = dns.config() + '[record]\nenabled = true\nmax_body = "1KiB"\n'
    srv = Server(tmp / "srv", plugins=chain(["bob"]), extra=extra,
                 max_connections_per_ip=100, client_unknown_recipient_limit=0)
    srv.start()
    codes = {}

    def worker(k):
        for i in range(k, SESSIONS, 4):
            codes[i] = session(srv.port, i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert srv.stop() == 0
    dns.stop()
    assert all((codes[i] == 250) == good_domain(i) for i in range(SESSIONS)), codes
    rec_dir = srv.data_dir / "recordings"
    files = list(rec_dir.glob("sessions-*.jsonl"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    return rec_dir, srv.config_path.read_text(), tmp


def replay(config, rec_dir, *args):
    r = subprocess.run([str(BIN), "replay", "--config", str(config), "--sessions", str(rec_dir), *args],
                       capture_output=True, text=True, timeout=600)
    return r


def write(tmp, name, base_text, blocked):
    """The recorded server's file with the blocklist changed."""
    p = tmp / name
    p.write_text(base_text.replace('"blocked" = ["bob"]', json.dumps(blocked).join(['"blocked" = ', ''])))
    assert ('"blocked" = ' + json.dumps(blocked)) in p.read_text()
    return p


def test_the_recording_holds_every_session_and_no_more_than_asked(recorded):
    rec_dir, _, _ = recorded
    lines = [json.loads(line) for f in sorted(rec_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]
    sessions = [x for x in lines if "session" in x]
    dns = [x["dns"] for x in lines if "dns" in x]
    assert len(sessions) == SESSIONS
    stages = {c["stage"] for s in sessions for c in s["calls"]}
    assert {"connect", "helo", "mail-from", "rcpt-to", "data"} <= stages
    # The DNS answers plugins got are in it (the good domain's MX, NXDOMAINs).
    assert any(d["query"] == {"mx": "mx.example.net"} for d in dns), dns[:3]
    assert any("Err" in d["result"] for d in dns)
    # Bodies are cut at max_body (1 KiB); the header section is whole.
    data = [c["arg"] for s in sessions for c in s["calls"] if c["stage"] == "data"]
    assert data and all(a["kind"] == "message" and not a["truncated"] for a in data)


def test_replaying_the_same_configuration_changes_nothing(recorded):
    rec_dir, text, tmp = recorded
    same = tmp / "same.toml"
    same.write_text(text)
    r = replay(same, rec_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"replayed {SESSIONS} sessions" in r.stdout and "0 differing decisions" in r.stdout, r.stdout
    r = replay(same, rec_dir, "--json")
    report = json.loads(r.stdout)
    assert report["sessions"] == SESSIONS and report["differences"] == 0 and not report["threshold_crossed"]
    assert report["calls"] >= SESSIONS * 3
    # Replay is offline: a milter in the configuration is not asked (and
    # its unreachable socket costs nothing).
    with_milter = tmp / "with-milter.toml"
    with_milter.write_text(text + '\n[[milter]]\nname = "m"\naddress = "unix:/nonexistent/m.sock"\n')
    r = replay(with_milter, rec_dir)
    assert r.returncode == 0 and "0 differing decisions" in r.stdout, r.stdout + r.stderr
    assert "(1 milter(s) of" in r.stdout and "not asked: replay is offline)" in r.stdout


def test_one_changed_rule_gives_exactly_the_expected_differences(recorded):
    rec_dir, text, tmp = recorded
    changed = write(tmp, "changed.toml", text, ["bob", "carol"])
    expected = sum(1 for i in range(SESSIONS) if good_domain(i) and RECIPIENTS[i % 3] == "carol")
    r = replay(changed, rec_dir, "--json")
    assert r.returncode == 1, r.stdout + r.stderr           # over the default threshold of 0
    report = json.loads(r.stdout)
    by_stage = {s["stage"]: s for s in report["stages"]}
    assert report["differences"] == expected and report["threshold_crossed"]
    assert by_stage["rcpt-to"]["differences"] == expected
    assert all(s["differences"] == 0 for name, s in by_stage.items() if name != "rcpt-to")
    ex = by_stage["rcpt-to"]["examples"][0]
    assert "carol@example.test" in ex["argument"] and ex["before"].startswith("pass")
    assert ex["now"].startswith("reject 550 5.1.1") and "(by blocklist)" in ex["now"], ex
    # The same differences against the old configuration's chain.
    old = tmp / "old.toml"
    old.write_text(text)
    r = replay(changed, rec_dir, "--against", str(old), "--json")
    assert json.loads(r.stdout)["differences"] == expected, r.stdout + r.stderr
    # A threshold that allows them: exit 0; the text report names the stage.
    r = replay(changed, rec_dir, "--max-differences", str(expected))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{expected} differing decisions" in r.stdout and "ok" in r.stdout.splitlines()[-1]
    assert "recorded pass" in r.stdout and "now reject 550 5.1.1" in r.stdout, r.stdout


def test_bad_recordings_are_refused_with_file_and_line(recorded, tmp_path):
    _, text, tmp = recorded
    same = tmp / "same-bad.toml"
    same.write_text(text)
    bad = tmp_path / "sessions-1.jsonl"
    bad.write_text('{"v": 1, "session": "x", "started_unix_ms": 0, "generation": 1, "calls": []}\nnot json\n')
    r = replay(same, bad)
    assert r.returncode == 2 and f"{bad}:2: not a recording line" in r.stderr, r.stderr
    r = replay(same, tmp_path / "missing")
    assert r.returncode == 2 and "no such file or directory" in r.stderr, r.stderr
