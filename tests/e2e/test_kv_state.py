"""Policy state that survives restarts and spans nodes ([kv], issue 16),
with the real binary, the real shipped plugins and a real `redis-server`
(Debian's package, started here on a loopback port of its own):

- two Postern nodes sharing one Redis: message-limits' per-client limit,
  a greylist triplet, the AUTH failure limit and "recently authenticated"
  relay hold across both;
- the embedded store (the default): greylist and rate-limit state survive a
  graceful restart and a `kill -9` (after its flush interval); the memory
  store, for contrast, forgets;
- Redis killed under load: every call is answered within the kv deadline
  with the plugin's configured error behaviour, nothing hangs, the outage is
  logged once, and after Redis returns the limits work again without a
  restart;
- `postern check` says whether the store answers; `postern kv export` /
  `import` move state from the embedded store to Redis; a reload switches
  stores."""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest
from harness import BIN, Raw
from pluginkit import auth_file, component, greet, login, plain, reply

# make test installs it (Makefile test-deps); its absence fails the tests.
REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free and valid too
    (ephemeral ports above 55535 would overflow it)."""
    import random
    for _ in range(200):
        p = random.randrange(20000, 30000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 10000))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """A throwaway redis-server on 127.0.0.1:<port>, no persistence."""

    def __init__(self, tmp):
        assert REDIS, "redis-server is not installed (make test-deps installs it)"
        self.port = free_port()
        self.dir = tmp
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if self.cli("PING") == "PONG":
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def cli(self, *args) -> str:
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def keys(self, prefix: str) -> list[str]:
        out = self.cli("--scan", "--pattern", prefix + "*")
        return sorted(k for k in out.splitlines() if k)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis(tmp_path):
    r = RedisServer(tmp_path)
    yield r
    r.stop()


def redis_kv(r: RedisServer, prefix: str, timeout: str = "2s") -> str:
    """[kv] for Redis `r`. The deadline is generous by default (a loaded CI
    machine must not turn a slow first connection into a refusal); the
    tests about the deadline set their own."""
    return (f'[kv]\nbackend = "redis"\ntimeout = "{timeout}"\noutage_log_interval = "1h"\n'
            f'[kv.redis]\nurl = "redis://127.0.0.1:{r.port}"\nprefix = "{prefix}"\n')


def limits(config, **settings):
    return component("message-limits", config, **({"capabilities": ["kv"]} | settings))


def greylist(config=None, **settings):
    cfg = {"delay": 1, "whitelist_networks": [], **(config or {})}
    return component("greylist", cfg, **({"capabilities": ["kv"], "max_memory": "64MiB", "timeout_ms": 5000}
                                         | settings))


RATE_LIMITED = reply(421, "4.7.0", "Rate limit exceeded, try again later")
RATE_UNAVAILABLE = reply(451, "4.3.0", "Rate limit check unavailable, try again later")


def greylisted(seconds=1):
    return reply(451, "4.7.1", f"Greylisted, please try again in {seconds} seconds")


def mail(port) -> tuple[int, str]:
    """One session's MAIL FROM (counted by message-limits' max_messages)."""
    c = greet(port)
    r = c.cmd("MAIL FROM:<a@client.test>")
    c.close()
    return r


def rcpt(port, sender="alice@client.test", recipient="bob@example.test"):
    c = greet(port)
    assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    r = c.cmd(f"RCPT TO:<{recipient}>")
    c.close()
    return r


def nodes(start, redis, plugins, extra="", **settings):
    """Two servers sharing one Redis under a fresh key prefix."""
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    a = start(plugins=plugins, extra=extra + redis_kv(redis, prefix), **settings)
    b = start(plugins=plugins, extra=extra + redis_kv(redis, prefix), **settings)
    return a, b, prefix


# -- two nodes, one Redis ------------------------------------------------------

def test_message_limit_holds_across_two_nodes(start, redis):
    a, b, prefix = nodes(start, redis, [limits({"window": 60, "default": {"max_messages": 3}})])
    assert mail(a.port)[0] == 250
    assert mail(b.port)[0] == 250
    assert mail(a.port)[0] == 250
    # The 4th message of this client, on either node, is over the limit.
    assert mail(b.port) == RATE_LIMITED
    assert mail(a.port) == RATE_LIMITED
    keys = redis.keys(prefix)
    assert keys and all(k.startswith(prefix) for k in keys), keys
    # Server-side expiry: the counter dies with its window.
    ttl = int(redis.cli("PTTL", keys[0]))
    assert 0 < ttl <= 60_000, ttl


def test_greylist_triplet_seen_on_one_node_passes_on_the_other(start, redis):
    a, b, _ = nodes(start, redis, [greylist()])
    assert rcpt(a.port) == greylisted(1)
    assert rcpt(b.port) == greylisted(1)  # too early, and known: not a new triplet
    time.sleep(1.2)
    assert rcpt(b.port)[0] == 250
    new = [r for s in (a, b) for r in s.log_records()
           if r.get("plugin") == "greylist" and r.get("message") == "greylisted new triplet"]
    assert len(new) == 1, new


def test_auth_failures_and_recent_auth_are_shared(start, redis):
    relay = component("relay-control", {"recent_auth_window": 600}, capabilities=["kv"], kv_namespace="auth")
    extra = ('[[listener]]\nname = "sub"\naddress = "127.0.0.1:0"\nallow_plaintext_auth = true\n'
             '[auth]\nmax_failures = 5\nclient_failure_limit = 2\nclient_failure_window = "1m"\n'
             'remember_window = "10m"\n')
    a, b, _ = nodes(start, redis, [auth_file({"alice": "pw"}), relay], extra=extra, listen=[])
    # Recent AUTH on node A lets the address relay through node B.
    c = greet(b.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<x@remote.example>")[0] == 554
    c.close()
    login(a.port, "alice", "pw").cmd("QUIT")
    c = greet(b.port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<x@remote.example>")[0] == 250
    c.close()
    # Two failures on node B reach the per-client limit; node A refuses the
    # client before it tries again, even with the right password.
    c = greet(b.port)
    assert c.cmd(f"AUTH PLAIN {plain('alice', 'wrong')}")[0] == 535
    assert c.cmd(f"AUTH PLAIN {plain('alice', 'wrong')}")[0] == 535
    c.close()
    c = greet(a.port)
    code, text = c.cmd(f"AUTH PLAIN {plain('alice', 'pw')}")
    assert code == 421 and "Too many failed authentications from your address" in text, (code, text)


# -- the embedded store --------------------------------------------------------

def test_embedded_state_survives_restart_and_kill9(start):
    plugins = [limits({"window": 600, "default": {"max_messages": 3}}), greylist()]
    srv = start(plugins=plugins)
    first = time.time()
    assert rcpt(srv.port) == greylisted(1)                      # message 1; triplet recorded
    srv.stop()                                                  # graceful: flushed at shutdown
    assert (srv.data_dir / "kv.redb").exists()
    srv.start()
    time.sleep(max(0.0, first + 1.2 - time.time()))
    assert rcpt(srv.port)[0] == 250                              # message 2; the triplet was kept
    time.sleep(2.5)                                             # one flush interval (1 s) and a margin
    srv.kill9()
    srv.start()
    assert mail(srv.port)[0] == 250                             # message 3
    assert mail(srv.port) == RATE_LIMITED                       # the count survived kill -9
    # `postern check` reads the store while the server holds it.
    r = srv.admin("check")
    assert r.returncode == 0 and "kv store embedded" in r.stdout and "in use by a running server" in r.stdout, r


def test_memory_store_forgets_at_restart(start):
    srv = start(plugins=[greylist()], extra='[kv]\nbackend = "memory"\n')
    assert rcpt(srv.port) == greylisted(1)
    srv.stop()
    srv.start()
    time.sleep(1.2)
    assert rcpt(srv.port) == greylisted(1)   # a new triplet again: nothing was kept


def test_export_import_moves_embedded_state_to_redis(start, redis, tmp_path):
    srv = start(plugins=[greylist()])
    assert rcpt(srv.port) == greylisted(1)
    srv.stop()
    dump = tmp_path / "kv.jsonl"
    r = subprocess.run([str(BIN), "kv", "export", "--config", str(srv.config_path), "--output", str(dump)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = dump.read_text().splitlines()
    assert len(lines) == 1 and '"key":"greylist\\u001f' in lines[0] and "expires_at_ms" in lines[0], lines
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    srv.write_config([greylist()], extra=redis_kv(redis, prefix))
    r = subprocess.run([str(BIN), "kv", "import", "--config", str(srv.config_path), "--input", str(dump)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "imported 1 entries" in r.stderr, r.stderr
    assert len(redis.keys(prefix)) == 1
    srv.start()
    time.sleep(1.2)
    assert rcpt(srv.port)[0] == 250   # the triplet came along
    # A bad line is named with its number.
    dump.write_text(lines[0] + "\n{\"key\": 1}\n")
    r = subprocess.run([str(BIN), "kv", "import", "--config", str(srv.config_path), "--input", str(dump)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "kv.jsonl:2:" in r.stderr, r.stderr


def test_reload_switches_the_store(start, redis):
    plugins = [limits({"window": 60, "default": {"max_messages": 2}})]
    srv = start(plugins=plugins)
    assert mail(srv.port)[0] == 250
    assert mail(srv.port)[0] == 250
    assert mail(srv.port) == RATE_LIMITED
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    srv.write_config(plugins, extra=redis_kv(redis, prefix))
    r = srv.admin("reload")
    assert r.returncode == 0, r.stderr
    # A fresh store: the counter starts again, in Redis.
    assert mail(srv.port)[0] == 250
    assert redis.keys(prefix)
    status = srv.admin("status")
    assert f"kv: redis redis://127.0.0.1:{redis.port} (answering)" in status.stdout, status.stdout


# -- Redis failure -------------------------------------------------------------

def scrape(srv) -> str:
    rec = srv.wait_log(lambda r: r.get("message") == "metrics listening")
    with urllib.request.urlopen(f"http://{rec['address']}/metrics", timeout=10) as r:
        return r.read().decode()


def timed_mail(port) -> tuple[float, tuple[int, str]]:
    c = greet(port)
    t = time.monotonic()
    r = c.cmd("MAIL FROM:<a@client.test>")
    took = time.monotonic() - t
    c.close()
    return took, r


def test_redis_killed_under_load_then_back(start, redis):
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    srv = start(plugins=[limits({"window": 60, "default": {"max_messages": 1_000_000}})],
                extra=redis_kv(redis, prefix, timeout="200ms") + '[metrics]\nlisten = "127.0.0.1:0"\n')
    assert mail(srv.port)[0] == 250
    stop = time.time() + 3.0
    killed_at = time.time() + 1.0

    def load():
        out = []
        while time.time() < stop:
            out.append(timed_mail(srv.port))
        return out

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(load) for _ in range(4)]
        time.sleep(max(0.0, killed_at - time.time()))
        redis.kill()
        results = [r for f in futures for r in f.result(timeout=60)]
    codes = {r[1] for r in results}
    assert all(r[0] == 250 or r == RATE_UNAVAILABLE for r in codes), codes
    failed = [t for t, r in results if r == RATE_UNAVAILABLE]
    assert failed, "no call saw the outage"
    # The deadline (200 ms) bounds every call; scheduling on a loaded machine
    # gets a generous margin, a hang would not fit in it.
    assert max(t for t, _ in results) < 2.0, max(t for t, _ in results)
    outage = [r for r in srv.log_records() if r.get("message", "").startswith("kv store unavailable")]
    assert len(outage) == 1, outage   # logged once per interval, not per call
    assert "postern_kv_up{store=\"redis\"} 0" in scrape(srv)
    # Redis returns at the same address: no restart, limits work again.
    redis.start()
    deadline = time.time() + 10
    while time.time() < deadline and mail(srv.port)[0] != 250:
        time.sleep(0.2)
    assert mail(srv.port)[0] == 250
    srv.wait_log(lambda r: r.get("message", "").startswith("kv store answering again"))
    # The counter lives in the new Redis again (it restarted empty): drive it over.
    keys = redis.keys(prefix)
    assert len(keys) == 1, keys
    redis.cli("SET", keys[0], "1000000", "KEEPTTL")
    assert mail(srv.port) == RATE_LIMITED
    metrics = scrape(srv)
    assert "postern_kv_up{store=\"redis\"} 1" in metrics
    failed_calls = [line for line in metrics.splitlines()
                    if line.startswith('postern_kv_calls_total{op="increment",result="unavailable"}')]
    assert failed_calls and float(failed_calls[0].split()[-1]) >= len(failed), failed_calls


def test_check_says_whether_redis_answers(start, redis, tmp_path):
    srv = start(plugins=[], extra=redis_kv(redis, "chk:"))
    r = srv.admin("check")
    assert r.returncode == 0 and f"kv store redis redis://127.0.0.1:{redis.port}" in r.stdout, r
    redis.kill()
    t = time.monotonic()
    r = srv.admin("check")
    assert r.returncode == 1 and "[kv]" in r.stderr, r
    assert time.monotonic() - t < 10
    # A server with Redis down still starts (plugins answer as configured).
    # Each shipped plugin's on_kv_error, the same two spellings everywhere.
    def chain(on_kv_error):
        return [limits({"default": {"max_messages": 5}, "on_kv_error": on_kv_error}),
                greylist({"on_kv_error": on_kv_error}),
                component("relay-control", {"recent_auth_window": 600, "on_kv_error": on_kv_error},
                          capabilities=["kv"], kv_namespace="auth")]
    srv2 = start(plugins=chain("tempfail"), extra=redis_kv(redis, "down:"))
    assert mail(srv2.port) == RATE_UNAVAILABLE
    srv2.write_config(chain("tempfail")[1:], extra=redis_kv(redis, "down:"))
    assert srv2.admin("reload").returncode == 0
    assert rcpt(srv2.port) == reply(451, "4.7.1", "Greylisting temporarily unavailable")
    srv2.write_config(chain("tempfail")[2:], extra=redis_kv(redis, "down:"))
    assert srv2.admin("reload").returncode == 0
    assert rcpt(srv2.port, recipient="x@remote.example") == reply(
        451, "4.3.0", "x@remote.example: Temporary relay check failure, try again later")
    srv3 = start(plugins=chain("allow"), extra=redis_kv(redis, "down:"))
    assert mail(srv3.port)[0] == 250
    assert rcpt(srv3.port)[0] == 250                                          # not greylisted
    assert rcpt(srv3.port, recipient="x@remote.example")[0] == 554           # not recently authenticated


def test_redis_cluster(start, tmp_path):
    """Three masters of a Redis Cluster on loopback (redis-cli --cluster
    create); keys spread over the slots, every operation lands on its node."""
    nodes_, ports = [], [cluster_port() for _ in range(3)]
    try:
        for p in ports:
            d = tmp_path / f"n{p}"
            d.mkdir()
            nodes_.append(subprocess.Popen(
                [REDIS, "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(d / "nodes.conf"), "--save", "", "--appendonly", "no",
                 "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in ports:
            deadline = time.time() + 10
            while subprocess.run(["redis-cli", "-p", str(p), "PING"], capture_output=True, text=True).stdout.strip() != "PONG":
                assert time.time() < deadline, f"cluster node {p} did not start"
                time.sleep(0.05)
        r = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                            "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        deadline = time.time() + 30
        for p in ports:   # every node knows the slot map
            while "cluster_state:ok" not in subprocess.run(["redis-cli", "-p", str(p), "CLUSTER", "INFO"],
                                                           capture_output=True, text=True).stdout:
                assert time.time() < deadline, f"cluster node {p} did not reach cluster_state:ok"
                time.sleep(0.1)
        urls = ", ".join(f'"redis://127.0.0.1:{p}"' for p in ports)
        kv = (f'[kv]\nbackend = "redis"\ntimeout = "1s"\n[kv.redis]\nurls = [{urls}]\ntopology = "cluster"\n'
              f'prefix = "c:"\n')
        a = start(plugins=[greylist(), limits({"window": 60, "default": {"max_messages": 4}})], extra=kv)
        b = start(plugins=[greylist(), limits({"window": 60, "default": {"max_messages": 4}})], extra=kv)
        assert rcpt(a.port, "x@client.test", "y@example.test") == greylisted(1)
        assert rcpt(b.port, "z@client.test", "y@example.test") == greylisted(1)
        time.sleep(1.2)
        assert rcpt(b.port, "x@client.test", "y@example.test")[0] == 250
        assert rcpt(a.port, "z@client.test", "y@example.test")[0] == 250
        assert mail(b.port) == RATE_LIMITED   # the 5th MAIL FROM of this client, over both nodes
        counts = [int(subprocess.run(["redis-cli", "-p", str(p), "DBSIZE"], capture_output=True,
                                     text=True).stdout.strip()) for p in ports]
        assert sum(counts) == 3, counts       # two triplets and one counter
    finally:
        for n in nodes_:
            n.kill()
            n.wait()


def spawn_redis(*args) -> subprocess.Popen:
    return subprocess.Popen([REDIS, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until(pred, timeout: float, what: str):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def cli(port, *args, tls: list[str] | None = None) -> str:
    r = subprocess.run(["redis-cli", "-p", str(port), *(tls or []), *map(str, args)],
                       capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def test_redis_sentinel_failover(start, tmp_path):
    """A master, its replica and a Sentinel: after the master is killed and
    the Sentinel promotes the replica, Postern finds the new master by itself
    and the counters replicated before the failover still count."""
    m, r, s = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(spawn_redis("--port", m, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", tmp_path))
        procs.append(spawn_redis("--port", r, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", tmp_path, "--replicaof", "127.0.0.1", m))
        wait_until(lambda: "master_link_status:up" in cli(r, "INFO", "replication"), 20, "the replica to sync")
        conf = tmp_path / "sentinel.conf"
        conf.write_text(f"port {s}\nbind 127.0.0.1\ndir {tmp_path}\n"
                        f"sentinel monitor svc 127.0.0.1 {m} 1\n"
                        "sentinel down-after-milliseconds svc 500\nsentinel failover-timeout svc 3000\n")
        procs.append(spawn_redis(conf, "--sentinel"))
        wait_until(lambda: str(r) in cli(s, "SENTINEL", "replicas", "svc"), 30, "the Sentinel to see the replica")
        kv = (f'[kv]\nbackend = "redis"\ntimeout = "300ms"\noutage_log_interval = "1h"\n[kv.redis]\n'
              f'url = "redis://127.0.0.1:{s}"\ntopology = "sentinel"\nsentinel_master = "svc"\nprefix = "s:"\n')
        srv = start(plugins=[limits({"window": 60, "default": {"max_messages": 3}})], extra=kv)
        assert mail(srv.port)[0] == 250
        assert mail(srv.port)[0] == 250
        wait_until(lambda: cli(r, "GET", cli(m, "--scan", "--pattern", "s:*")) == "2", 10, "replication")
        procs[0].kill()
        procs[0].wait()
        wait_until(lambda: str(r) in cli(s, "SENTINEL", "get-master-addr-by-name", "svc"), 30, "the failover")
        # Calls during the switch answer as on_kv_error says (tempfail), then the new master counts on.
        wait_until(lambda: mail(srv.port)[0] == 250, 15, "Postern to reach the new master")   # message 3
        assert mail(srv.port) == RATE_LIMITED
        assert "role:master" in cli(r, "INFO", "replication")
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_redis_over_tls_with_an_acl_user(start, tmp_path):
    """rediss:// with a private CA (tls_ca_file) and an ACL user whose
    password comes from password_file; a wrong password and an unknown CA
    are named by `postern check`."""
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path, timeout=60)
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
         "-subj", "/CN=Postern test CA", "-days", "2")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    (tmp_path / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "srv.pem", "-days", "2", "-extfile", "ext")
    port = free_port()
    proc = spawn_redis("--port", 0, "--tls-port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--dir", tmp_path, "--tls-cert-file", tmp_path / "srv.pem",
                       "--tls-key-file", tmp_path / "srv.key", "--tls-ca-cert-file", tmp_path / "ca.pem",
                       "--tls-auth-clients", "no", "--user", "default", "off",
                       "--user", "postern", "on", ">s3cret", "~*", "+@all")
    tls = ["--tls", "--cacert", str(tmp_path / "ca.pem"), "--user", "postern", "--pass", "s3cret", "--no-auth-warning"]
    try:
        wait_until(lambda: cli(port, "PING", tls=tls) == "PONG", 10, "redis over TLS")
        (tmp_path / "pw").write_text("s3cret\n")

        def kv(password_file="pw", ca=True):
            return (f'[kv]\nbackend = "redis"\ntimeout = "2s"\n[kv.redis]\nurl = "rediss://localhost:{port}"\n'
                    f'username = "postern"\npassword_file = "{tmp_path / password_file}"\nprefix = "tls:"\n'
                    + (f'tls_ca_file = "{tmp_path / "ca.pem"}"\n' if ca else ""))
        srv = start(plugins=[limits({"window": 60, "default": {"max_messages": 1}})], extra=kv())
        r = srv.admin("check")
        assert r.returncode == 0 and f"kv store redis rediss://localhost:{port}" in r.stdout, r
        assert mail(srv.port)[0] == 250
        assert mail(srv.port) == RATE_LIMITED
        assert cli(port, "--scan", "--pattern", "tls:*", tls=tls)
        (tmp_path / "bad").write_text("wrong\n")
        srv.write_config([], extra=kv("bad"))
        r = srv.admin("check")
        assert r.returncode == 1 and "[kv]" in r.stderr and "authentication failed" in r.stderr.lower(), r.stderr
        srv.write_config([], extra=kv(ca=False))
        r = srv.admin("check")
        assert r.returncode == 1 and "[kv]" in r.stderr and "certificate" in r.stderr.lower(), r.stderr
    finally:
        proc.kill()
        proc.wait()
