"""Safe rollout around hot swap, through the real binary: a canary
generation for a share of new sessions (`postern reload --canary N`),
`postern promote` and `postern rollback` under load, the previous
generation kept for a manual rollback, a plugin's circuit breaker, and the
automatic rollback of a generation whose plugins start failing, with no
accepted message lost."""

import re
import subprocess
import time

from harness import BIN, ehlo, message, plugin
from test_metrics import scrape, value
from test_reload import LOAD_SETTINGS, WANT, Load, policy


def flip(port, sender="probe@client.test"):
    c = ehlo(port)
    c.cmd(f"MAIL FROM:<{sender}>")
    code = c.cmd("RCPT TO:<flip@example.test>")[0]
    c.close()
    return code


def admin(srv, *args):
    return subprocess.run([str(BIN), *args, "--config", str(srv.config_path)], capture_output=True, text=True,
                          timeout=300)


def test_canary_gets_its_share_and_promote_and_rollback_lose_nothing(start):
    srv = start(plugins=policy("allow"), **LOAD_SETTINGS)
    srv.write_config(policy("reject"))
    r = admin(srv, "reload", "--canary", "10")
    assert r.returncode == 0 and "canary: 10% of new sessions get generation 2" in r.stdout, r.stdout + r.stderr
    # 1,000 sessions: 10% (within 3 points) see the canary's policy.
    codes = [flip(srv.port) for _ in range(1000)]
    assert set(codes) == {250, 550}
    share = codes.count(550) / len(codes)
    assert 0.07 <= share <= 0.13, share
    status = srv.admin("status").stdout
    assert re.search(r"canary  generation 2: \d+ sessions, \d+ plugin calls, 0 failed \(0\.0%\), \d+ rejects", status), status
    assert "10% of new sessions" in status and "current generation 1:" in status, status
    # No second reload while a canary runs.
    r = srv.admin("reload")
    assert r.returncode == 1 and "canary generation 2 is running" in r.stderr, r.stderr
    # Promote under load: every session finishes, new ones get generation 2.
    with Load(srv.port, 10) as load:
        time.sleep(0.5)
        r = admin(srv, "promote")
        assert r.returncode == 0 and "generation 2 promoted from canary to current" in r.stdout, r.stdout + r.stderr
        time.sleep(0.5)
    assert load.errors == [], load.errors[:5]
    assert len(load.sessions) > 20
    assert all(flip(srv.port) == WANT["reject"] for _ in range(20))
    assert len(srv.queued()) >= len(load.sessions)
    # A second canary, rolled back under load: everyone is back on generation 2.
    srv.write_config(policy("allow"))
    assert admin(srv, "reload", "--canary", "50").returncode == 0
    with Load(srv.port, 10) as load:
        time.sleep(0.5)
        r = admin(srv, "rollback")
        assert r.returncode == 0 and "canary generation 3 rolled back (manual)" in r.stdout, r.stdout + r.stderr
        time.sleep(0.5)
    assert load.errors == [], load.errors[:5]
    assert all(flip(srv.port) == WANT["reject"] for _ in range(20))
    assert "last rollout event: canary generation 3 rolled back (manual)" in srv.admin("status").stdout


def test_manual_rollback_to_the_kept_generation_and_refusals(start):
    srv = start(plugins=policy("allow"))
    r = admin(srv, "rollback")
    assert r.returncode == 1 and "nothing to roll back to" in r.stderr, r.stderr
    r = admin(srv, "promote")
    assert r.returncode == 1 and "no canary is running" in r.stderr, r.stderr
    srv.write_config(policy("reject"))
    assert srv.admin("reload").returncode == 0
    assert flip(srv.port) == 550
    assert "previous generation 1 kept for rollback" in srv.admin("status").stdout
    r = admin(srv, "rollback")
    assert r.returncode == 0 and "generation 2 rolled back to generation 1 (manual)" in r.stdout, r.stdout
    assert flip(srv.port) == 250
    assert "generation 1 from" in srv.admin("status").stdout
    r = admin(srv, "rollback")
    assert r.returncode == 1 and "nothing to roll back to" in r.stderr
    # A canary may not change what every session shares.
    srv.write_config(policy("reject"), listen=["127.0.0.1:0", "127.0.0.1:0"])
    r = admin(srv, "reload", "--canary", "10")
    assert r.returncode == 1 and "a canary cannot change listeners" in r.stderr, r.stderr
    for bad in ("0", "100"):
        r = admin(srv, "reload", "--canary", bad)
        assert r.returncode == 1 and "from 1 to 99" in r.stderr, r.stderr


def test_a_failing_generation_opens_the_breaker_then_is_rolled_back(start):
    """After a reload, the gate plugin traps on half its calls (recipients
    with "trap" in them). Its breaker opens (then its on_error, 451, answers
    without calling it) and the generation's failure rate crosses
    [rollback] failure_rate: Postern goes back to generation 1 by itself,
    within the watch. Every message that got 250 is in the spool."""
    extra = ("[breaker]\nwindow = \"10s\"\nmin_calls = 6\nfailure_rate = 0.5\ncool_down = \"30s\"\n"
             "[rollback]\nwatch = \"60s\"\nmin_calls = 20\nfailure_rate = 0.4\n"
             "[metrics]\nlisten = \"127.0.0.1:0\"\n")
    # A plugin called at RCPT TO only: half of its calls trap.
    good = [plugin("gate", "test-rcpt-only", {"blocked": []})]
    bad = [plugin("gate", "test-rcpt-only", {"blocked": [], "trap_on": "trap"})]
    srv = start(plugins=good, extra=extra, **LOAD_SETTINGS)
    srv.write_config(bad, extra=extra)
    assert srv.admin("reload").returncode == 0
    accepted = 0
    answers = []
    t0 = time.monotonic()
    for i in range(60):
        c = ehlo(srv.port)
        c.cmd("MAIL FROM:<s@client.test>")
        rcpt = f"trap{i}@example.test" if i % 2 else f"ok{i}@example.test"
        code = c.cmd(f"RCPT TO:<{rcpt}>")[0]
        answers.append(code)
        if code == 250:
            assert c.cmd("DATA")[0] == 354
            c.send(message(subject=f"m{i}") + b".\r\n")
            if c.reply()[0] == 250:
                accepted += 1
        c.close()
        if "rolled back" in srv.admin("status").stdout:
            break
    rec = srv.wait_log(lambda r: "circuit breaker opened" in r.get("message", ""), timeout=10)
    assert rec["plugin"] == "gate"
    rb = srv.wait_log(lambda r: "rolled back to generation 1 (automatic)" in r.get("message", ""), timeout=10)
    assert "plugin calls failed" in rb["message"]
    assert time.monotonic() - t0 < 60
    assert 451 in answers                    # the on_error of failed and skipped calls
    text = scrape(srv)
    assert value(text, "postern_plugin_breaker_opened_total", plugin="gate") >= 1
    assert value(text, "postern_plugin_breaker_skipped_total", plugin="gate") >= 1
    assert value(text, "postern_rollbacks_total", kind="generation", trigger="automatic") == 1
    status = srv.admin("status").stdout
    assert "generation 1 from" in status and "last rollout event: generation 2 rolled back" in status, status
    # Generation 1 is back: trap@ recipients are accepted again.
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<s@client.test>")
    assert c.cmd("RCPT TO:<trap-after@example.test>")[0] == 250
    c.close()
    # No accepted message lost.
    assert len(srv.queued()) == accepted and accepted > 0
