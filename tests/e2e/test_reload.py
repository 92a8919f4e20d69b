"""Hot swap: reloads under continuous load drop nothing, new sessions see the
new policy at once, sessions in flight keep theirs; broken reloads are
refused with the reason and the old policy keeps serving; status, SIGHUP,
file watching, listener changes and memory across 100 reloads."""

import random
import signal
import socket
import subprocess
import threading
import time

import pytest
from harness import BIN, Raw, ehlo, message, plugin, wasm


def policy(kind: str) -> list[dict]:
    """'allow': flip@ is accepted; 'reject': flip@ gets 550 5.7.1 policy-reject."""
    rules = []
    if kind == "reject":
        rules = [{"stage": "rcpt-to", "contains": "flip@", "kind": "reject", "code": 550, "enhanced": "5.7.1",
                  "text": "policy-reject"}]
    return [plugin("gate", "test-probe", {"tag": kind, "rules": rules})]


WANT = {"allow": 250, "reject": 550}
# Server settings for Load: many clients on one address, no per-client limit.
LOAD_SETTINGS = {"max_connections_per_ip": 100, "client_unknown_recipient_limit": 0}


class Load:
    """`n` clients sending without pause; each session asks RCPT flip@ twice,
    some time apart, and records both answers and its start/end times. All
    from 127.0.0.1: the server needs `client_unknown_recipient_limit = 0`
    (LOAD_SETTINGS), as the "reject" policy's refusals would soon exceed the
    per-client limit of refused recipients."""

    def __init__(self, port: int, n: int = 20):
        self.port = port
        self.n = n
        self.stop = threading.Event()
        self.sessions: list[tuple[float, float, int, int]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(n)]

    def client(self, i: int):
        rnd = random.Random(i)
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                c = Raw(self.port, timeout=30)
                code, _ = c.reply()
                if code != 220:
                    raise AssertionError(f"greeting {code}")
                if c.cmd("EHLO load.test")[0] != 250 or c.cmd("MAIL FROM:<l@load.test>")[0] != 250:
                    raise AssertionError("EHLO/MAIL refused")
                first, _ = c.cmd("RCPT TO:<flip@example.test>")
                if c.cmd("RCPT TO:<steady@example.test>")[0] != 250:
                    raise AssertionError("steady recipient refused")
                time.sleep(rnd.random() * 0.05)
                second, _ = c.cmd("RCPT TO:<flip@example.test>")
                if first not in (250, 550) or first != second:
                    raise AssertionError(f"session saw {first} then {second}")
                if c.cmd("DATA")[0] != 354:
                    raise AssertionError("DATA refused")
                c.send(message() + b".\r\n")
                if c.reply()[0] != 250:
                    raise AssertionError("message refused")
                if c.cmd("QUIT")[0] != 221:
                    raise AssertionError("QUIT")
                c.close()
                with self.lock:
                    self.sessions.append((start, time.monotonic(), first, second))
            except Exception as e:  # noqa: BLE001 — every failure is recorded
                with self.lock:
                    self.errors.append(f"client {i}: {type(e).__name__}: {e}")

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_swaps_under_load_drop_nothing(start):
    srv = start(plugins=policy("allow"), **LOAD_SETTINGS)
    reloads = []  # (started, finished, kind)
    with Load(srv.port, 20) as load:
        time.sleep(0.5)
        kinds = ["reject", "allow"] * 5
        previous = "allow"
        for kind in kinds:
            srv.write_config(policy(kind))
            # A session in flight across the reload keeps its policy.
            held = ehlo(srv.port)
            held.cmd("MAIL FROM:<held@client.test>")
            assert held.cmd("RCPT TO:<steady@example.test>")[0] == 250
            assert held.cmd("RCPT TO:<flip@example.test>")[0] == WANT[previous]
            t0 = time.monotonic()
            r = srv.admin("reload")
            t1 = time.monotonic()
            assert r.returncode == 0, r.stdout + r.stderr
            assert "reloaded: generation" in r.stdout
            reloads.append((t0, t1, kind))
            assert held.cmd("RCPT TO:<flip@example.test>")[0] == WANT[previous]
            assert held.cmd("DATA")[0] == 354
            held.send(message() + b".\r\n")
            assert held.reply()[0] == 250
            held.close()
            previous = kind
            # New sessions after the reload returned must see the new policy.
            c = ehlo(srv.port)
            c.cmd("MAIL FROM:<probe@client.test>")
            assert c.cmd("RCPT TO:<flip@example.test>")[0] == WANT[kind]
            c.close()
            time.sleep(0.3)
    assert load.errors == [], load.errors[:5]
    assert len(load.sessions) > 100
    # Every session that started after a reload finished (and before the next
    # began) saw that reload's policy; sessions straddling a reload kept the
    # answer they started with (checked per session above).
    checked = 0
    bounds = reloads + [(float("inf"), float("inf"), None)]
    for (t0, t1, kind), (n0, _, _) in zip(bounds, bounds[1:]):
        for s0, _, first, _ in load.sessions:
            if t1 < s0 < n0:
                assert first == WANT[kind], (kind, first)
                checked += 1
    assert checked > 50
    # Load sessions that began on one generation and ended after the next was
    # in service: they answered with the policy they started with.
    straddled = 0
    for (p0, p1, kind), (t0, t1, _) in zip([(0, 0, "allow")] + reloads, reloads):
        for s0, e, first, second in load.sessions:
            if p1 < s0 < t0 and e > t1:
                assert first == second == WANT[kind], (kind, first, second)
                straddled += 1
    assert straddled > 0
    assert len(srv.queued()) >= len(load.sessions)
    # Every replaced generation was freed with its last session.
    time.sleep(0.5)
    assert "older generations in memory: none" in srv.admin("status").stdout


def test_status_shows_generation_plugins_and_pinned_sessions(start):
    srv = start(plugins=policy("allow"))
    held = ehlo(srv.port)  # a session pinned to generation 1
    held.cmd("MAIL FROM:<a@client.test>")
    srv.write_config(policy("reject"))
    assert srv.admin("reload").returncode == 0
    r = srv.admin("status")
    assert r.returncode == 0, r.stderr
    assert "generation 2" in r.stdout
    assert "plugin gate" in r.stdout
    digest = __import__("hashlib").sha256(wasm("test-probe").read_bytes()).hexdigest()
    assert digest in r.stdout
    assert "on older generations: 1" in r.stdout
    assert "older generations in memory: 1 (1 sessions)" in r.stdout
    # The held session still has the old (allowing) policy.
    assert held.cmd("RCPT TO:<flip@example.test>")[0] == 250
    held.cmd("QUIT")
    held.closed()
    time.sleep(0.2)
    r = srv.admin("status")
    assert "on older generations: 0" in r.stdout
    assert "older generations in memory: none" in r.stdout


def test_unchanged_components_come_from_the_cache(start, tmp_path):
    """Only components whose content changed are compiled again."""
    no_disk = "[runtime]\ncache = false\n"  # only the server's own memory cache
    srv = start(plugins=policy("allow"), extra=no_disk)
    r = srv.admin("reload")
    assert r.returncode == 0 and "(0 plugins compiled, 1 from cache" in r.stdout, r.stdout
    # Same bytes under another path: still the cache (keyed by content).
    copy = tmp_path / "copy.wasm"
    copy.write_bytes(wasm("test-probe").read_bytes())
    srv.write_config([{"name": "gate", "path": str(copy), "config": {"tag": "x"}}], extra=no_disk)
    r = srv.admin("reload")
    assert r.returncode == 0 and "(0 plugins compiled, 1 from cache" in r.stdout, r.stdout
    # A different component is compiled.
    srv.write_config([plugin("gate", "test-rcpt-only", {"blocked": []})], extra=no_disk)
    r = srv.admin("reload")
    assert r.returncode == 0 and "(1 plugins compiled, 0 from cache" in r.stdout, r.stdout


def broken_cases(tmp_path):
    garbage = tmp_path / "garbage.wasm"
    garbage.write_bytes(b"not wasm at all")
    newer = tmp_path / "v2.wasm"
    built = wasm("test-rcpt-only").read_bytes()
    version = next(v for v in (b"0.1.0", b"0.2.0") if b"rcpt-to-hook@" + v in built)
    newer.write_bytes(built.replace(b"rcpt-to-hook@" + version, b"rcpt-to-hook@0.9.0"))
    return [
        ("syntax", lambda s: s.config_path.write_text(s.config_path.read_text() + "\n[server\n"), "unclosed table"),
        ("unknown key", lambda s: s.write_config(policy("reject"), hostnme="x"), "unknown field `hostnme`"),
        ("missing wasm", lambda s: s.write_config([{"name": "gate", "path": str(tmp_path / "nope.wasm"), "config": {}}]),
         "cannot read"),
        ("invalid wasm", lambda s: s.write_config([{"name": "gate", "path": str(garbage), "config": {}}]),
         "is not a WebAssembly file"),
        ("init refuses", lambda s: s.write_config([plugin("gate", "test-probe", {"refuse": "bad rules"})]),
         "refused its configuration: bad rules"),
        ("wit version", lambda s: s.write_config([{"name": "gate", "path": str(newer), "config": {"blocked": []}}]),
         "rcpt-to-hook@0.9.0"),
    ]


def test_broken_reloads_keep_the_old_policy(start, tmp_path):
    srv = start(plugins=policy("reject"))
    good = srv.config_path.read_text()
    for name, breaker, want in broken_cases(tmp_path):
        breaker(srv)
        r = srv.admin("reload")
        assert r.returncode != 0, name
        assert want in r.stderr, (name, r.stderr)
        assert "previous configuration keeps serving" in r.stderr
        srv.wait_log(lambda rec, w=want: "reload refused" in str(rec.get("message")) and w in str(rec.get("message")))
        c = ehlo(srv.port)
        c.cmd("MAIL FROM:<a@client.test>")
        assert c.cmd("RCPT TO:<flip@example.test>")[0] == 550, name
        c.close()
        srv.config_path.write_text(good)
    status = srv.admin("status")
    assert "generation 1 " in status.stdout


def test_sighup_and_restart_required_settings(start):
    srv = start(plugins=policy("allow"))
    srv.write_config(policy("reject"), max_recipients=5, extra="[runtime]\nmax_instances = 64\n")
    srv.proc.send_signal(signal.SIGHUP)
    rec = srv.wait_log(lambda r: r.get("message") == "reloaded")
    assert rec["trigger"] == "SIGHUP"
    assert "runtime.max_instances" in rec["restart_required"]
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<flip@example.test>")[0] == 550
    for i in range(5):
        assert c.cmd(f"RCPT TO:<r{i}@example.test>")[0] == 250
    # server.max_recipients applied to the new session.
    assert c.cmd("RCPT TO:<r9@example.test>")[0] == 452


def test_watch_reloads_on_file_change(start):
    srv = start(plugins=policy("allow"), watch=True)
    time.sleep(1.1)  # distinct mtime
    srv.write_config(policy("reject"))
    rec = srv.wait_log(lambda r: r.get("message") == "reloaded", timeout=15)
    assert rec["trigger"] == "watch"
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<flip@example.test>")[0] == 550


def test_listen_addresses_change_by_reload(start):
    srv = start(plugins=policy("allow"))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv.write_config(policy("allow"), listen=["127.0.0.1:0", f"127.0.0.1:{port}"])
    r = srv.admin("reload")
    assert r.returncode == 0 and f"listening on 127.0.0.1:{port}" in r.stdout
    assert Raw(port).reply()[0] == 220
    srv.write_config(policy("allow"))
    r = srv.admin("reload")
    assert f"stopped listening on 127.0.0.1:{port}" in r.stdout
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert Raw(srv.port).reply()[0] == 220


def reload_rounds(srv, n, kinds=("reject", "allow")):
    """n reloads under load; returns (RSS during, RSS after the load drained)."""
    with Load(srv.port, 10) as load:
        time.sleep(0.3)
        for i in range(n):
            srv.write_config(policy(kinds[i % 2]))
            r = srv.admin("reload")
            assert r.returncode == 0, r.stderr
        during = srv.rss_kib()
    assert load.errors == [], load.errors[:5]
    time.sleep(1)  # every session, and so every old generation, is gone
    return during, srv.rss_kib(), len(load.sessions)


def test_memory_across_100_reloads_under_load(start, capsys):
    srv = start(plugins=policy("allow"), **LOAD_SETTINGS)
    time.sleep(0.5)
    start_rss = srv.rss_kib()
    # The first 100 reloads under load let the allocator reach its working
    # set; the next 100 must not grow it: a generation that is not freed
    # after its last session ends would add up here.
    during1, after1, n1 = reload_rounds(srv, 100)
    during2, after2, n2 = reload_rounds(srv, 100)
    with capsys.disabled():
        print(f"\n[reload-memory] RSS start={start_rss} KiB; after 100 reloads={after1} KiB "
              f"(peak {during1}); after 200 reloads={after2} KiB (peak {during2}); "
              f"{n1 + n2} sessions")
    assert after2 - after1 < 16 * 1024
    status = srv.admin("status").stdout
    assert "generation 201" in status and "on older generations: 0" in status
    assert "older generations in memory: none" in status


def test_shadow_plugin_is_counted_not_enforced_until_a_reload_enforces_it(start):
    """mode = "shadow": the would-be rejection is logged and counted while the
    message is accepted; a reload with mode = "enforce" makes it real."""
    import urllib.request

    def gate(mode):
        return [plugin("newpolicy", "test-probe", {"tag": "shadow", "rules": [
            {"stage": "rcpt-to", "contains": "flip@", "kind": "reject", "code": 550, "enhanced": "5.7.1",
             "text": "would reject"}]}, mode=mode)]

    metrics = '[metrics]\nlisten = "127.0.0.1:0"\n'
    srv = start(plugins=gate("shadow"), extra=metrics)
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<flip@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(message() + b".\r\n")
    assert c.reply()[0] == 250
    c.close()
    assert len(srv.queued()) == 1
    rec = srv.wait_log(lambda r: r.get("shadow_verdict") == "reject")
    assert rec["plugin"] == "newpolicy" and rec["reply"] == "550 5.7.1 would reject", rec
    # status names the mode and counts what the shadow plugin would have changed.
    status = srv.admin("status").stdout
    assert "shadow" in status and "(shadow: 1 verdicts would have differed)" in status, status
    addr = srv.wait_log(lambda r: r.get("message") == "metrics listening")["address"]

    def shadow_rejects():
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if (line.startswith("postern_plugin_verdicts_total{") and 'plugin="newpolicy"' in line
                    and 'stage="rcpt-to"' in line and 'verdict="reject"' in line):
                return line
        return ""

    line = shadow_rejects()
    assert 'shadow="true"' in line and line.endswith(" 1"), line
    srv.write_config(gate("enforce"), extra=metrics)
    assert srv.admin("reload").returncode == 0
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<flip@example.test>") == (550, "5.7.1 would reject")
    assert len(srv.queued()) == 1


def test_refused_reloads_use_up_no_generation_and_status_pipes_into_head(start):
    """Issue 20's smaller items: a refused reload leaves the generation
    counter as it was (the next good reload is generation 2, not 3); and
    `postern status` into a pipe whose reader is gone ends quietly
    (SIGPIPE, as `| head` expects) instead of panicking on the broken pipe."""
    srv = start(plugins=policy("allow"))
    good = srv.config_path.read_text()
    srv.config_path.write_text(good + "\n[server.nonsense]\n")
    r = srv.admin("reload")
    assert r.returncode != 0, r.stdout
    srv.config_path.write_text(good)
    r = srv.admin("reload")
    assert r.returncode == 0 and "generation 2" in r.stdout, r.stdout + r.stderr
    # `true` exits at once: status writes after the reader is gone.
    p = subprocess.run(f"'{BIN}' status --config '{srv.config_path}' | true; "
                       f"'{BIN}' status --config '{srv.config_path}' | head -1", shell=True,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("postern ") and "generation 2 " in p.stdout, p
    assert "panicked" not in p.stderr and "Broken pipe" not in p.stderr, p.stderr


def test_reload_with_another_file_switches_to_it(start, tmp_path):
    """`postern reload --config OTHER` (OTHER reaching the same server: same
    data dir) loads OTHER, not the server's own file, says so, and OTHER is
    the server's file from then on (status names it; SIGHUP reloads it)."""
    srv = start(plugins=policy("allow"))
    other = tmp_path / "other.toml"
    other.write_text(srv.config_path.read_text().replace('"tag" = "allow"', '"tag" = "reject"').replace(
        '"rules" = []', '"rules" = [{ "stage" = "rcpt-to", "contains" = "flip@", "kind" = "reject", '
                        '"code" = 550, "enhanced" = "5.7.1", "text" = "policy-reject" }]'))
    assert '"policy-reject"' in other.read_text()

    def rcpt_flip():
        c = ehlo(srv.port)
        c.cmd("MAIL FROM:<a@client.test>")
        code = c.cmd("RCPT TO:<flip@example.test>")[0]
        c.close()
        return code

    assert rcpt_flip() == 250
    r = subprocess.run([str(BIN), "reload", "--config", str(other)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"generation 2 from {other}" in r.stdout and f"the server ran {srv.config_path}" in r.stdout, r.stdout
    assert "gate " in r.stdout and " enforce" in r.stdout, r.stdout      # each plugin's mode
    assert rcpt_flip() == 550
    status = srv.admin("status").stdout
    assert f"generation 2 from {other}" in status, status
    # SIGHUP now reloads OTHER (the original file still allows flip@).
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(lambda rec: rec.get("message") == "reloaded" and rec.get("trigger") == "SIGHUP")
    assert rcpt_flip() == 550
    assert f"generation 3 from {other}" in srv.admin("status").stdout
