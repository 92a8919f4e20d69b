#!/usr/bin/env python3
"""Throughput benchmark: Postern against Postfix and smtp-sink (`make bench`).

Two jobs (--jobs, default both):

receive  starts, each on its own loopback port:
  smtp-sink          Postfix's no-op SMTP server (nothing stored): the ceiling;
  postfix            a private Postfix instance (bench/postfix/*.cf) with its
                     normal fsync'd queue and the discard transport;
  postern-default    Postern with the default plugin chain (bench/postern-default.toml);
  postern-noplugins  Postern without plugins (bench/postern-noplugins.toml);
  and times until the load generator has its last reply.
relay    starts one counting SMTP sink (smtp-sink -c) and:
  smtp-sink          the load generator straight into that sink: the ceiling;
  postfix            the private instance relaying to the sink with its smtp
                     transport (bench/postfix/relay-*.cf on top of *.cf);
  postern-default    the default chain relaying to the sink (bench/postern-relay.toml);
  and times until the sink has counted every message.

Each job drives its targets in turn with Postfix's smtp-source (N messages, S
parallel sessions, one connection per message unless --reuse), alternating
targets run by run for --rounds rounds, checks that every message was
accepted (and, relaying, delivered), and prints messages per second, the
ratios between targets, per-stage plugin latency (from Postern's Prometheus
histograms) and peak memory. All numbers also go to bench/results/latest.json.

Python 3.11+, standard library only. Run as root (Postfix's master must be).
See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import fcntl
import json
import os
import platform
import pty
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
POSTERN = Path(os.environ.get("POSTERN_BIN", TARGET_DIR / "release" / "postern"))
RESULTS = BENCH / "results"

DOMAIN = "bench.test"
HELO = "client.bench"
SENDER = "bench@client.bench"
RCPT = f"rcpt@{DOMAIN}"
# The relay job's recipient: not a local domain of any MTA (Postern's
# local_domains and Postfix's mydestination are bench.test only), so each
# relays it (the client is in its relay networks) to the sink.
RELAY_RCPT = f"rcpt@relay.{DOMAIN}"

JOBS = ["receive", "relay"]
TARGETS = ["smtp-sink", "postfix", "postern-default", "postern-noplugins"]
# The relay job's targets, in their order (of --targets, only these run in
# it): postern-noplugins cannot relay (the host grants relay only through a
# plugin), the extra targets are receive variants.
RELAY_TARGETS = ["smtp-sink", "postfix", "postern-default"]
RELAY_CONFIG = BENCH / "postern-relay.toml"
# Also available with --targets: every shipped plugin (adds dnsbl and greylist),
# mail authentication, the default chain with its state in Redis (a
# redis-server run.py starts on loopback) instead of the embedded store, and
# the default chain plus the clamav plugin scanning every message with a
# clamd run.py starts (with a one-signature database of its own).
EXTRA_TARGETS = ["postern-all", "postern-mailauth", "postern-redis", "postern-clamav"]
POSTERN_CONFIGS = {
    "postern-default": BENCH / "postern-default.toml",
    "postern-redis": BENCH / "postern-default.toml",
    "postern-clamav": BENCH / "postern-default.toml",
    "postern-noplugins": BENCH / "postern-noplugins.toml",
    "postern-all": BENCH / "postern-all.toml",
    "postern-mailauth": BENCH / "postern-mailauth.toml",
}
_DNS_STUB = None
_REDIS = None
_CLAMD = None


def clamd_socket() -> str:
    """A clamd for the postern-clamav target, with a database of one test
    signature (EICAR, written here: nothing is downloaded)."""
    global _CLAMD
    if _CLAMD is None:
        d = Path(tempfile.mkdtemp(prefix="bench-clamd-"))
        (d / "db").mkdir()
        eicar = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
        (d / "db" / "bench.ndb").write_text(f"Bench.EICAR:0:*:{eicar.encode().hex()}\n")
        sock = d / "clamd.sock"
        (d / "clamd.conf").write_text(f"LocalSocket {sock}\nDatabaseDirectory {d / 'db'}\nForeground yes\n"
                                      f"PidFile {d / 'clamd.pid'}\nMaxThreads 20\n")
        proc = subprocess.Popen([tool("clamd"), "-c", str(d / "clamd.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(proc.kill)
        deadline = time.monotonic() + 60
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("clamd did not start")
            time.sleep(0.05)
        _CLAMD = str(sock)
    return _CLAMD


def redis_port() -> int:
    """A redis-server on loopback for the postern-redis target (no
    persistence: Redis' own fsync policy is the operator's choice)."""
    global _REDIS
    if _REDIS is None:
        port = free_port()
        proc = subprocess.Popen(
            [tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(proc.kill)
        wait_port(port, 10)
        _REDIS = port
    return _REDIS


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def dns_stub_port() -> int:
    """The loopback DNS stub for postern-mailauth (started on first use)."""
    global _DNS_STUB
    if _DNS_STUB is None:
        sys.path.insert(0, str(BENCH))
        from dns_stub import DnsStub

        _DNS_STUB = DnsStub({"client.bench": "v=spf1 ip4:127.0.0.1 -all"})
    return _DNS_STUB.port
# The goals the issue sets (shown, never enforced here), by job: ratios of
# the medians (at least), and the plugin chain's CPU per message (at most).
GOALS = {
    "receive": {
        "postern-default / postfix": 4.5,
        "chain CPU per message (µs)": 120,
        "postern-default / smtp-sink": 0.5,
        "postern-default / postern-noplugins": 0.9,
    },
    "relay": {
        "postern-default / postfix": 3.5,
    },
}
# The ratios printed for each job (numerator, denominator), when both ran.
RATIOS = {
    "receive": [("postern-default", "postfix"), ("postern-default", "smtp-sink"),
                ("postern-default", "postern-noplugins"), ("postern-noplugins", "postfix"),
                ("postern-noplugins", "smtp-sink"), ("postfix", "smtp-sink")],
    "relay": [("postern-default", "postfix"), ("postern-default", "smtp-sink"), ("postfix", "smtp-sink")],
}


def tool(name: str) -> str:
    for p in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if p and os.access(p, os.X_OK):
            return p
    sys.exit(f"bench: {name} not found (apt-get install postfix; `make bench` does it)")


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------- /proc


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon... of a process in KiB ({} if it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("Vm", "Rss")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    except (OSError, ValueError):
        pass
    return out


def proc_pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def proc_stat(pid: int) -> tuple[int, str, float] | None:
    """(ppid, comm, cpu seconds) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    f = raw[raw.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(f[1]), comm, (int(f[11]) + int(f[12])) / tick


def children_cpu(pid: int) -> float:
    """CPU seconds of the reaped children of a process (cutime + cstime)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = raw[raw.rindex(")") + 2 :].split()
    return (int(f[13]) + int(f[14])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds used by a process tree so far: the live processes' own time
    plus what the root's children that already exited used (the root reaps
    them). Postfix's master restarts smtpd/cleanup/... processes all the time."""
    total = children_cpu(root)
    for pid in descendants(root):
        st = proc_stat(pid)
        if st:
            total += st[2]
    return total


def descendants(root: int) -> list[int]:
    """root and every process below it."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                children.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    total = sum(f[:8])
    return total - idle, total


class RssSampler(threading.Thread):
    """Samples a process tree while a run is going: the largest sum of VmRSS
    and of Pss (proportional set size, shared pages split between the
    processes sharing them) over the tree, and each program's largest VmHWM."""

    def __init__(self, root_pid: int, interval: float = 0.5, pss: bool = True):
        super().__init__(daemon=True)
        self.root, self.interval, self.pss = root_pid, interval, pss
        self.peak_rss_sum = 0
        self.peak_pss_sum = 0
        self.peak_processes = 0
        self.by_program: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)
        self.sample()

    def sample(self) -> None:
        rss_sum = pss_sum = 0
        pids = descendants(self.root)
        for pid in pids:
            st = proc_stat(pid)
            vm = proc_status(pid)
            if not st or not vm:
                continue
            rss_sum += vm.get("VmRSS", 0)
            if self.pss:
                pss_sum += proc_pss_kib(pid)
            self.by_program[st[1]] = max(self.by_program.get(st[1], 0), vm.get("VmHWM", 0))
        self.peak_rss_sum = max(self.peak_rss_sum, rss_sum)
        self.peak_pss_sum = max(self.peak_pss_sum, pss_sum)
        self.peak_processes = max(self.peak_processes, len(pids))

    def stop(self) -> None:
        self._halt.set()
        self.join()


# --------------------------------------------------------------------- network


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_smtp(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until 127.0.0.1:port greets with 220."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                greeting = s.recv(512)
                s.sendall(b"QUIT\r\n")
                s.recv(512)
                if greeting.startswith(b"220"):
                    return
                last = greeting
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"no SMTP greeting on 127.0.0.1:{port} after {timeout:.0f}s ({last!r})")


# --------------------------------------------------------------------- metrics

HIST = "postern_plugin_call_duration_seconds"
CPU_HIST = "postern_plugin_call_cpu_seconds"
KV_HIST = "postern_kv_call_seconds"
LINE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE_RE.match(line)
        if not m:
            continue
        labels = dict(LABEL_RE.findall(m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            pass
    return out


def metric(samples, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in labels.items()))


def by_label(samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, l, v in samples:
        if n == name:
            out[l.get(label, "")] = out.get(l.get(label, ""), 0) + v
    return out


class Histograms:
    """Per (plugin, stage) latency histograms: finite bucket bounds (seconds),
    cumulative counts for them, total count (which includes the +Inf bucket)
    and sum."""

    def __init__(self) -> None:
        self.bounds: list[float] = []
        self.data: dict[tuple[str, str], dict] = {}
        self.corrected = False

    @classmethod
    def from_samples(cls, samples, family: str = HIST, labels=("plugin", "stage")) -> "Histograms":
        h = cls()
        raw: dict[tuple[str, ...], dict] = {}
        for n, l, v in samples:
            if not n.startswith(family):
                continue
            key = tuple(l.get(x, "?") for x in labels)
            d = raw.setdefault(key, {"buckets": {}, "count": 0.0, "sum": 0.0})
            if n == family + "_bucket":
                le = l.get("le", "+Inf")
                if le not in ("+Inf", "Inf"):
                    d["buckets"][float(le)] = v
            elif n == family + "_count":
                d["count"] = v
            elif n == family + "_sum":
                d["sum"] = v
        bounds: set[float] = set()
        for d in raw.values():
            bounds.update(d["buckets"])
        h.bounds = sorted(bounds)
        for key, d in raw.items():
            cum = [d["buckets"].get(b, 0.0) for b in h.bounds]
            # prometheus-client's encode_histogram() accumulates the bucket
            # counts it is given; if the caller passes counts that are already
            # cumulative, the exposition is accumulated twice (buckets above
            # _count). Undo that once so the quantiles are right either way.
            if cum and cum[-1] > d["count"] + 0.5:
                cum = [cum[0]] + [cum[i] - cum[i - 1] for i in range(1, len(cum))]
                h.corrected = True
            h.data[key] = {"cum": cum, "count": d["count"], "sum": d["sum"]}
        return h

    def minus(self, before: "Histograms") -> "Histograms":
        out = Histograms()
        out.bounds, out.corrected = self.bounds, self.corrected or before.corrected
        for key, d in self.data.items():
            b = before.data.get(key)
            if b and b is not d and before.bounds == self.bounds:
                d = {
                    "cum": [x - y for x, y in zip(d["cum"], b["cum"])],
                    "count": d["count"] - b["count"],
                    "sum": d["sum"] - b["sum"],
                }
            if d["count"] > 0:
                out.data[key] = d
        return out

    def plus(self, other: "Histograms") -> "Histograms":
        if not self.data:
            return other
        out = Histograms()
        out.bounds, out.corrected = self.bounds, self.corrected or other.corrected
        for key in set(self.data) | set(other.data):
            a = self.data.get(key, {"cum": [0.0] * len(self.bounds), "count": 0.0, "sum": 0.0})
            b = other.data.get(key, {"cum": [0.0] * len(self.bounds), "count": 0.0, "sum": 0.0})
            out.data[key] = {
                "cum": [x + y for x, y in zip(a["cum"], b["cum"])],
                "count": a["count"] + b["count"],
                "sum": a["sum"] + b["sum"],
            }
        return out

    def merged(self, keys) -> dict:
        cum = [0.0] * len(self.bounds)
        count = total = 0.0
        for k in keys:
            d = self.data[k]
            cum = [x + y for x, y in zip(cum, d["cum"])]
            count += d["count"]
            total += d["sum"]
        return {"cum": cum, "count": count, "sum": total}

    def quantile(self, d: dict, q: float) -> tuple[float, bool]:
        """(seconds, beyond_last_bucket): linear interpolation inside the
        bucket holding the rank, as Prometheus' histogram_quantile does."""
        count = d["count"]
        if count <= 0:
            return 0.0, False
        rank = q * count
        lower_bound, lower_cum = 0.0, 0.0
        for b, c in zip(self.bounds, d["cum"]):
            if c >= rank:
                if c == lower_cum:
                    return b, False
                return lower_bound + (b - lower_bound) * (rank - lower_cum) / (c - lower_cum), False
            lower_bound, lower_cum = b, c
        return (self.bounds[-1] if self.bounds else 0.0), True


# --------------------------------------------------------------------- targets


class Target:
    name = "?"
    per_run_process = False  # started afresh for every measured run

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def before_run(self) -> None: ...
    def after_run(self, messages: int, measured: bool = True) -> dict:
        return {"ok": True, "problems": []}
    def server_pid(self) -> int | None:
        return None
    def memory(self) -> dict:
        return {}
    def cpu_seconds(self) -> float:
        pid = self.server_pid()
        return tree_cpu(pid) if pid else 0.0


class SinkTarget(Target):
    name = "smtp-sink"

    def __init__(self, base: Path):
        self.base = base
        self.proc: subprocess.Popen | None = None
        self.hwm = 0

    def start(self) -> None:
        self.port = free_port()
        cmd = [tool("smtp-sink")]
        if os.geteuid() == 0:
            cmd += ["-u", "postfix"]
        cmd += [f"127.0.0.1:{self.port}", "256"]
        self.log = open(self.base / "smtp-sink.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_smtp(self.port, 10, self.proc)

    def server_pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def after_run(self, messages: int, measured: bool = True) -> dict:
        self.hwm = max(self.hwm, proc_status(self.proc.pid).get("VmHWM", 0))
        return {"ok": True, "problems": []}

    def memory(self) -> dict:
        return {"peak_rss_kib": self.hwm, "measured": "VmHWM of the smtp-sink process"}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.hwm = max(self.hwm, proc_status(self.proc.pid).get("VmHWM", 0))
            self.proc.terminate()
            self.proc.wait(10)


class CountingSink(SinkTarget):
    """The relay job's SMTP sink: Postfix's smtp-sink with its running
    counter (-c) on a pipe. Every MTA of the relay job delivers to it, and
    as a target of its own (smtp-source straight into it) it is the job's
    ceiling. One process serves the whole job (started and stopped with it).

    smtp-sink rewrites the counter line `sess=N quit=N mesg=N` (each ended by
    a carriage return) whenever a session ends, a QUIT arrives or a message's
    final "." does, before it sends the reply to it. A reader thread keeps
    the last `mesg` and notes the moment it reaches the total a run waits
    for. smtp-sink offers PIPELINING and 8BITMIME but not CHUNKING, so both
    MTAs send the content with DATA (Postfix's smtp client has no BDAT)."""

    name = "smtp-sink"
    COUNTER_RE = re.compile(rb"mesg=(\d+)")

    def __init__(self, base: Path):
        super().__init__(base)
        self.cond = threading.Condition()
        self.count = 0            # messages received so far (the counter's mesg)
        self.expected = 0         # messages sent to it so far, by the runs' accounts
        self.run_base = 0         # `expected` when the current run began
        self.reached_at: float | None = None  # monotonic time `count` reached `expected`
        self.eof = False

    def start(self) -> None:
        if self.proc is not None:
            return
        self.port = free_port()
        cmd = [tool("smtp-sink"), "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "postfix"]
        cmd += [f"127.0.0.1:{self.port}", "256"]
        self.log = open(self.base / "smtp-sink-relay.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log)
        try:
            # Room for a few seconds of counter lines (~30 bytes, up to three
            # per message): the sink must never wait for the reader thread.
            fcntl.fcntl(self.proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        threading.Thread(target=self._read, name="sink-counter", daemon=True).start()
        wait_smtp(self.port, 10, self.proc)

    def _read(self) -> None:
        fd = self.proc.stdout.fileno()
        buf = b""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                with self.cond:
                    self.eof = True
                    self.cond.notify_all()
                return
            buf += data
            end = buf.rfind(b"\r")
            if end < 0:
                continue
            m = self.COUNTER_RE.search(buf, buf.rfind(b"\r", 0, end) + 1, end)
            buf = buf[end + 1:]
            if not m:
                continue
            with self.cond:
                self.count = int(m.group(1))
                if self.reached_at is None and self.count >= self.expected:
                    self.reached_at = time.monotonic()
                    self.cond.notify_all()

    def expect(self, messages: int) -> None:
        """A run is about to send `messages` more (through an MTA or not)."""
        with self.cond:
            self.run_base = self.expected
            self.expected += messages
            self.reached_at = None

    def wait_done(self, timeout: float) -> float | None:
        """The monotonic time at which the sink had every message of the
        run (None: not within `timeout` seconds, or the sink exited)."""
        with self.cond:
            self.cond.wait_for(lambda: self.reached_at is not None or self.eof, timeout)
            return self.reached_at

    def settle(self, messages: int) -> list[str]:
        """After a run (the MTA drained): check that the sink got exactly the
        run's messages, none missing and none extra (a bounce to the
        sender's remote domain would come here too); resynchronise the
        totals either way."""
        time.sleep(0.2)  # anything extra still on its way
        with self.cond:
            got = self.count - self.run_base
            self.expected = self.count
        if got != messages:
            return [f"the sink received {got} messages, expected {messages}"]
        return []

    def cpu_seconds(self) -> float:
        st = proc_stat(self.proc.pid) if self.proc else None
        return st[2] if st else 0.0



def run_with_tty_stderr(cmd: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run a Postfix command with a terminal as stderr: Postfix tools print
    their diagnostics only to a tty (otherwise only to syslog)."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
            if time.monotonic() > deadline:
                p.kill()
                break
        rc = p.wait(timeout)
        return rc, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    finally:
        os.close(master)


def override_parameters(main_cf: str, overrides: str) -> str:
    """main.cf text with the parameters `overrides` sets removed (each with
    its continuation lines) and `overrides` appended: Postfix would take the
    last of two settings too, but warn about each."""
    names = set(re.findall(r"(?m)^([A-Za-z0-9_]+)\s*=", overrides))
    out, skipping = [], False
    for line in main_cf.splitlines(keepends=True):
        if line[:1] in (" ", "\t") and line.strip() and not line.lstrip().startswith("#"):
            if not skipping:
                out.append(line)
            continue
        m = re.match(r"([A-Za-z0-9_]+)\s*=", line)
        skipping = bool(m and m.group(1) in names)
        if not skipping:
            out.append(line)
    return "".join(out).rstrip("\n") + "\n\n" + overrides


class PostfixTarget(Target):
    """A private Postfix instance. Only ever addressed with `postfix -c <our
    config dir>`: the system's default instance (/etc/postfix) is not read
    or changed. With `sink` (the relay job) its smtp transport delivers
    everything to that sink (bench/postfix/relay-*.cf applied on top)."""

    name = "postfix"

    def __init__(self, base: Path, sink: CountingSink | None = None):
        self.sink = sink
        self.dir = base / ("postfix-relay" if sink else "postfix")
        self.conf = self.dir / "conf"
        self.queue = self.dir / "queue"
        self.data = self.dir / "data"
        self.maillog = self.dir / "maillog"
        self.sent = 0
        self.log_offset = 0
        self.warnings: list[str] = []
        self.sampler: RssSampler | None = None
        self.mem = {"peak_rss_sum_kib": 0, "peak_pss_sum_kib": 0, "peak_processes": 0, "by_program_hwm_kib": {}}
        self.started = False

    def postfix(self, *args: str) -> str:
        rc, out = run_with_tty_stderr([tool("postfix"), "-c", str(self.conf), *args])
        if rc != 0:
            raise RuntimeError(f"postfix -c {self.conf} {' '.join(args)} failed ({rc}):\n{out}")
        return out

    def start(self) -> None:
        self.port = free_port()
        for d in (self.conf, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data, "postfix")
        subst = {
            "@CONFIG_DIR@": str(self.conf),
            "@QUEUE_DIR@": str(self.queue),
            "@DATA_DIR@": str(self.data),
            "@MAILLOG@": str(self.maillog),
            "@BASE_DIR@": str(self.dir),
            "@DOMAIN@": DOMAIN,
            "@LISTEN@": f"127.0.0.1:{self.port}",
            "@SINK@": str(self.sink.port) if self.sink else "",
        }
        for f in ("main.cf", "master.cf"):
            text = (BENCH / "postfix" / f).read_text()
            if self.sink and f == "main.cf":
                text = override_parameters(text, (BENCH / "postfix" / "relay-main.cf").read_text())
            elif self.sink:
                text += "\n" + (BENCH / "postfix" / "relay-master.cf").read_text()
            for k, v in subst.items():
                text = text.replace(k, v)
            (self.conf / f).write_text(text)
        self.postfix("check")
        self.postfix("start")
        self.started = True
        wait_smtp(self.port, 30)

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def server_pid(self) -> int | None:
        return self.master_pid()

    def _new_log(self) -> str:
        try:
            with open(self.maillog, "rb") as f:
                f.seek(self.log_offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        # keep a partial last line for next time
        cut = data.rfind(b"\n") + 1
        self.log_offset += cut
        return data[:cut].decode("utf-8", "replace")

    def before_run(self) -> None:
        self._scan(self._new_log())
        self.sent_before = self.sent
        self.warnings = []
        pid = self.master_pid()
        if pid:
            self.sampler = RssSampler(pid)
            self.sampler.start()

    def _scan(self, text: str) -> list[str]:
        """Count deliveries; return the lines that mean trouble. Warnings
        (e.g. "file system clock is 1 seconds ahead") are kept as notes."""
        bad = []
        for line in text.splitlines():
            if "status=sent" in line:
                self.sent += 1
            elif re.search(r"\b(reject|fatal|panic|error):|status=(deferred|bounced)", line):
                bad.append(line)
            elif "warning:" in line and len(self.warnings) < 20:
                self.warnings.append(line)
        return bad

    def after_run(self, messages: int, measured: bool = True) -> dict:
        t0 = time.monotonic()
        bad: list[str] = []
        # The clock stopped when smtp-source finished; Postfix keeps discarding
        # the queue behind it. Wait until every message is through so the next
        # run starts on an empty queue.
        while time.monotonic() - t0 < 300:
            bad += self._scan(self._new_log())
            if self.sent - self.sent_before >= messages:
                break
            time.sleep(0.1)
        drain = time.monotonic() - t0
        if self.sampler:
            self.sampler.stop()
        if self.sampler and measured:
            s = self.sampler
            m = self.mem
            m["peak_rss_sum_kib"] = max(m["peak_rss_sum_kib"], s.peak_rss_sum)
            m["peak_pss_sum_kib"] = max(m["peak_pss_sum_kib"], s.peak_pss_sum)
            m["peak_processes"] = max(m["peak_processes"], s.peak_processes)
            for k, v in s.by_program.items():
                m["by_program_hwm_kib"][k] = max(m["by_program_hwm_kib"].get(k, 0), v)
        self.sampler = None
        delivered = self.sent - self.sent_before
        problems = []
        if delivered != messages:
            problems.append(f"postfix delivered (discarded) {delivered} of {messages} messages within 300 s")
        problems += bad[:20]
        return {"ok": not problems, "problems": problems, "delivered": delivered, "drain_after_s": round(drain, 3),
                "warnings": list(self.warnings)}

    def memory(self) -> dict:
        m = dict(self.mem)
        m["peak_rss_kib"] = m["peak_pss_sum_kib"] or m["peak_rss_sum_kib"]
        m["measured"] = (
            "largest sum of Pss (shared pages divided among sharers) over the master and all its "
            "children (smtpd, cleanup, qmgr, trivial-rewrite, discard, ...), sampled every 0.5 s "
            "during the measured runs; peak_rss_sum_kib is the same with VmRSS (counts shared "
            "libraries once per process)"
        )
        return m

    def stop(self) -> None:
        if self.started:
            try:
                self.postfix("stop")
            except RuntimeError as e:
                log(f"warning: {e}")
            self.started = False


class PosternTarget(Target):
    """Postern, started afresh (empty spool) for every measured run. With
    `deliver` it delivers to Maildirs; with `sink` (the relay job, whose
    config names a relayhost) it relays to that sink. Either way a run ends
    only when its spool is empty again."""

    per_run_process = True

    def __init__(self, name: str, config: Path, base: Path, keep: bool, deliver: bool = False,
                 sink: CountingSink | None = None):
        self.name, self.config, self.base, self.keep, self.deliver = name, config, base, keep, deliver
        self.sink = sink
        self.proc: subprocess.Popen | None = None
        self.run_no = 0
        self.hwm = 0
        self.hist_total = Histograms()
        self.cpu_total = Histograms()
        self.kv_total = Histograms()
        # Plugin instances over the measured runs: created fresh, and handed
        # on from one session to another (plugins that export `recycle`).
        self.instances = {"created": 0, "reused": 0}
        self.startup_s: list[float] = []

    def start(self) -> None:
        self.run_no += 1
        self.dir = self.base / f"{self.name}{'-relay' if self.sink else ''}-{self.run_no}"
        self.dir.mkdir(parents=True)
        self.logfile = self.dir / "postern.log"
        cmd = [
            str(POSTERN), "serve", "--config", str(self.render_config()),
            "--data-dir", str(self.dir / "data"), "--log-format", "json",
        ]
        t0 = time.monotonic()
        with open(self.logfile, "wb") as lf:
            self.proc = subprocess.Popen(
                cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=raise_nofile,
                env={k: v for k, v in os.environ.items() if k != "RUST_LOG"},
            )
        self.port, self.metrics = self._wait_addresses(timeout=600)
        wait_smtp(self.port, 30, self.proc)
        self.startup_s.append(time.monotonic() - t0)

    def render_config(self) -> Path:
        """A copy of the configuration in the run directory: relative paths
        (written relative to bench/) made absolute, delivery switched on for
        --deliver, the relay job's sink port put into `relayhost`."""
        text = self.config.read_text()
        text = re.sub(r'= "\.\./', f'= "{ROOT}/', text)
        if self.sink:
            text, n = re.subn(r'(?m)^(relayhost\s*=\s*)"\[127\.0\.0\.1\]:1"', rf'\1"[127.0.0.1]:{self.sink.port}"', text)
            if not n:
                raise RuntimeError(f'{self.config}: no relayhost = "[127.0.0.1]:1" (BENCH_SINK) to point at the sink')
        if "BENCH_DNS_STUB" in text:
            text = text.replace('"127.0.0.1:1"', f'"127.0.0.1:{dns_stub_port()}"')
        if self.name == "postern-clamav":
            text += (f'\n[av]\nclamd = "unix:{clamd_socket()}"\n\n[[plugin]]\nname = "clamav"\n'
                     f'path = "{ROOT}/target/wasm32-wasip2/release/clamav.wasm"\ncapabilities = ["av-scan"]\n'
                     'timeout_ms = 30000\n')
        if self.name == "postern-redis":
            text += (f'\n[kv]\nbackend = "redis"\n[kv.redis]\nurl = "redis://127.0.0.1:{redis_port()}"\n'
                     f'prefix = "bench-{self.run_no}:"\n')
        if self.deliver:
            text, n = re.subn(r"(?m)^(\[delivery\]\s*\n(?:[^\[].*\n)*?)enabled\s*=\s*false", r"\1enabled = true", text)
            if not n:
                raise RuntimeError(f"{self.config}: no `enabled = false` under [delivery] to switch on")
        out = self.dir / self.config.name
        out.write_text(text)
        return out

    def _wait_addresses(self, timeout: float) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        smtp = metrics = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: postern exited with {self.proc.returncode}:\n" + self.log_tail(40)
                )
            for line in self.logfile.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("message") == "listening" and rec.get("listener") == "smtp":
                    smtp = int(rec["address"].rsplit(":", 1)[1])
                elif rec.get("message") == "metrics listening":
                    metrics = rec["address"]
            if smtp and metrics:
                return smtp, metrics
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: postern did not start within {timeout:.0f}s:\n" + self.log_tail(40))

    def log_tail(self, n: int) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def scrape(self):
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as r:
            return parse_metrics(r.read().decode())

    def server_pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def before_run(self) -> None:
        self.before = self.scrape()
        self.log_lines_before = len(self.logfile.read_text(errors="replace").splitlines())

    def after_run(self, messages: int, measured: bool = True) -> dict:
        # Wait (briefly) for the last sessions to be accounted.
        deadline = time.monotonic() + 10
        while True:
            after = self.scrape()
            if metric(after, "postern_sessions_active") == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        drain = None
        if self.deliver or self.sink:
            # Delivery runs behind reception: wait until the spool is empty
            # again, so the next run does not compete with this one's backlog
            # (relaying, the sink has every message by now, but the spool
            # records of the last deliveries may still be being finalized).
            t0 = time.monotonic()
            while time.monotonic() - t0 < 600:
                if metric(self.scrape(), "postern_spool_messages") == 0:
                    break
                time.sleep(0.1)
            drain = round(time.monotonic() - t0, 3)
            after = self.scrape()
        st = proc_status(self.proc.pid)
        if measured:
            self.hwm = max(self.hwm, st.get("VmHWM", 0))
            self.rss_end = {k: st.get(k, 0) for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem")}
            self.rss_end["Pss"] = proc_pss_kib(self.proc.pid)
        q = metric(after, "postern_messages_total", result="queued") - metric(
            self.before, "postern_messages_total", result="queued"
        )
        replies_a = by_label(after, "postern_replies_total", "code")
        replies_b = by_label(self.before, "postern_replies_total", "code")
        replies = {c: int(v - replies_b.get(c, 0)) for c, v in replies_a.items() if v - replies_b.get(c, 0)}
        errs = [
            (l, v) for n, l, v in after if n == "postern_plugin_errors_total"
        ]
        errs_b = {tuple(sorted(l.items())): v for n, l, v in self.before if n == "postern_plugin_errors_total"}
        plugin_errors = {
            f"{l.get('plugin')}/{l.get('stage')}/{l.get('kind')}": int(v - errs_b.get(tuple(sorted(l.items())), 0))
            for l, v in errs
            if v - errs_b.get(tuple(sorted(l.items())), 0)
        }
        hist = Histograms.from_samples(after).minus(Histograms.from_samples(self.before))
        cpu = Histograms.from_samples(after, CPU_HIST).minus(Histograms.from_samples(self.before, CPU_HIST))
        kv = Histograms.from_samples(after, KV_HIST, ("op",)).minus(
            Histograms.from_samples(self.before, KV_HIST, ("op",)))
        if measured:
            self.kv_total = self.kv_total.plus(kv)
            self.hist_total = self.hist_total.plus(hist)
            self.cpu_total = self.cpu_total.plus(cpu)
            for key, family in (("created", "postern_plugin_instantiations_total"),
                                ("reused", "postern_plugin_instance_reuses_total")):
                self.instances[key] += int(metric(after, family) - metric(self.before, family))
        lines = self.logfile.read_text(errors="replace").splitlines()[self.log_lines_before :]
        bad_log = [l for l in lines if '"level":"WARN"' in l or '"level":"ERROR"' in l]
        problems = []
        if int(q) != messages:
            problems.append(f"postern_messages_total{{result=\"queued\"}} rose by {int(q)}, expected {messages}")
        odd = {c: n for c, n in replies.items() if c not in ("220", "250", "354", "221")}
        if odd:
            problems.append(f"unexpected replies: {odd}")
        if plugin_errors:
            problems.append(f"plugin errors: {plugin_errors}")
        if bad_log:
            problems.append(f"{len(bad_log)} WARN/ERROR log lines, first ones:")
            problems += bad_log[:15]
        relayed = {}
        if self.sink:
            # Every recipient delivered to the sink at the first attempt.
            relayed = {r: int(metric(after, "postern_delivery_recipients_total", result=r)
                              - metric(self.before, "postern_delivery_recipients_total", result=r))
                       for r in ("delivered", "deferred", "failed", "expired")}
            if relayed["delivered"] != messages or any(v for r, v in relayed.items() if r != "delivered"):
                problems.append(f"delivery outcomes {relayed}, expected {messages} delivered and nothing else")
            left = metric(after, "postern_spool_messages")
            if left:
                problems.append(f"{int(left)} messages still in the spool {drain:.0f}s after the run")
        return {
            "ok": not problems,
            "problems": problems,
            "queued": int(q),
            "replies": replies,
            "plugin_errors": plugin_errors,
            **({"drain_after_s": drain, "delivered_maildir": count_files(self.dir / "data" / "mail")} if self.deliver else {}),
            **({"drain_after_s": drain, "delivery_recipients": relayed} if self.sink else {}),
            "spool_syncs": int(metric(after, "postern_spool_syncs_total") - metric(self.before, "postern_spool_syncs_total")),
            "spool_commits": int(metric(after, "postern_spool_commits_total") - metric(self.before, "postern_spool_commits_total")),
        }

    def memory(self) -> dict:
        return {"peak_rss_kib": self.hwm, "at_end_of_last_run_kib": getattr(self, "rss_end", {}),
                "measured": "VmHWM of the postern process (one process), largest over the runs; "
                            "RssFile counts each mapping of a compiled plugin's image pages again"}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # The run's spool stays until the whole benchmark ends: deleting tens
        # of thousands of files here would slow the next run's file creation
        # (ext4 skips recently freed inodes when it allocates new ones).


def count_files(d: Path) -> int:
    n = 0
    for _, _, files in os.walk(d):
        n += len(files)
    return n


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------- load


def smtp_source(port: int, args, messages: int, rcpt: str = RCPT, sink: CountingSink | None = None) -> dict:
    """One run of the load generator against 127.0.0.1:port. The clock
    starts just before smtp-source (its first connection) and stops when it
    exits, or, with `sink` (the relay job), when the sink has counted the
    run's every message, whichever way round the two come."""
    cmd = [
        tool("smtp-source"),
        "-s", str(args.sessions),
        "-m", str(messages),
        "-l", str(args.size),
        "-M", HELO,
        "-f", SENDER,
        "-t", rcpt,
    ]
    if args.reuse:
        cmd.insert(1, "-d")
    if args.counter:
        cmd.insert(1, "-c")
    cmd.append(f"127.0.0.1:{port}")
    if sink:
        sink.expect(messages)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    sink_cpu0 = sink.cpu_seconds() if sink else 0.0
    busy0, total0 = cpu_jiffies()
    t0 = time.monotonic()
    p = subprocess.run(
        cmd, stdout=None if args.counter else subprocess.DEVNULL, stderr=subprocess.PIPE,
        timeout=max(900, messages / 5),
    )
    gen_end = end = time.monotonic()
    extra = {}
    if sink:
        reached = sink.wait_done(max(300, messages / 20))
        end = reached if reached is not None else time.monotonic()
        extra = {"loadgen_elapsed_s": round(gen_end - t0, 3), "sink_complete": reached is not None}
    elapsed = end - t0
    busy1, total1 = cpu_jiffies()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if sink:
        # What the sink and run.py (its counter reader) used meanwhile: not
        # "other" work disturbing the run.
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        extra["sink_cpu_s"] = round(sink.cpu_seconds() - sink_cpu0, 3)
        extra["harness_cpu_s"] = round((self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime), 3)
    stderr = p.stderr.decode("utf-8", "replace").strip().splitlines()
    return {
        "command": " ".join(cmd),
        "rc": p.returncode,
        "stderr": stderr[:20],
        "stderr_lines": len(stderr),
        "elapsed_s": round(elapsed, 3),
        **extra,
        "msgs_per_s": round(messages / elapsed, 1),
        "cpu_busy_pct": round(100.0 * (busy1 - busy0) / max(1, total1 - total0), 1),
        "_busy_s": (busy1 - busy0) / os.sysconf("SC_CLK_TCK"),
        "loadgen_cpu_s": round((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime), 3),
    }


def wait_quiet(max_wait: float, threshold: float = 15.0) -> float:
    """Wait (up to max_wait seconds) until the machine is nearly idle: other
    work (builds, tests) on a 2-core machine skews every number. Returns the
    busy percentage of the last one-second sample."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = cpu_jiffies()
        time.sleep(1.0)
        b1, t1 = cpu_jiffies()
        busy = 100.0 * (b1 - b0) / max(1, t1 - t0)
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def one_run(t: Target, args, messages: int, sink: CountingSink | None = None) -> dict:
    """Warm up (once per server process), then one measured run. With `sink`
    (the relay job) the load goes to the relay domain and the run lasts
    until the sink has every message."""
    rcpt = RELAY_RCPT if sink else RCPT
    if t.per_run_process:
        t.start()
    try:
        if t.per_run_process or not getattr(t, "warmed", False):
            t.before_run()
            w = smtp_source(t.port, args, args.warmup, rcpt, sink)
            wv = t.after_run(args.warmup, measured=False)
            if sink:
                wv["problems"] += sink.settle(args.warmup)
            if w["rc"] != 0 or w["stderr_lines"] or not wv["ok"] or wv["problems"]:
                raise RuntimeError(f"{t.name}: warm-up run failed: {w['stderr'][:5]} {wv['problems'][:20]}")
            t.warmed = True
        idle_before = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
        t.before_run()
        c0 = t.cpu_seconds()
        r = smtp_source(t.port, args, messages, rcpt, sink)
        c_mid = t.cpu_seconds()
        v = t.after_run(messages, measured=True)
        c_end = t.cpu_seconds()
        if sink:
            v["problems"] += sink.settle(messages)
            if not r["sink_complete"]:
                v["problems"].insert(0, f"the sink did not count every message within "
                                        f"{max(300, messages / 20):.0f}s of smtp-source's end")
            v["ok"] = not v["problems"]
    finally:
        if t.per_run_process:
            t.stop()
    r.update(v)
    r["machine_busy_before_pct"] = None if idle_before is None else round(idle_before, 1)
    # CPU of the server: during the run and whatever it still did afterwards
    # (Postfix discarding its queue, Postern delivering with --deliver).
    r["server_cpu_s"] = round(c_end - c0, 3)
    r["server_cpu_ms_per_msg"] = round(1000 * (c_end - c0) / messages, 3)
    ncpu = os.cpu_count() or 1
    foreign = r.pop("_busy_s") - (c_mid - c0) - r["loadgen_cpu_s"]
    if sink:
        foreign -= r["harness_cpu_s"] + (0.0 if t is sink else r["sink_cpu_s"])
    r["other_cpu_pct"] = round(max(0.0, 100.0 * foreign / (r["elapsed_s"] * ncpu)), 1)
    if r["rc"] != 0:
        r["ok"] = False
        r["problems"].insert(0, f"smtp-source exited with {r['rc']}")
    if r["stderr_lines"]:
        r["ok"] = False
        r["problems"].insert(0, f"smtp-source printed {r['stderr_lines']} lines on stderr: {r['stderr'][:5]}")
    return r


# --------------------------------------------------------------------- facts


def machine_facts(base: Path) -> dict:
    def first(path, key, sep=":"):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key) and sep in line:
                    return line.split(sep, 1)[1].strip().strip('"')
        except OSError:
            pass
        return None

    mounts = []
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mnt, fstype, opts = line.split()[:4]
        mounts.append((mnt, dev, fstype, opts))
    rb = str(base.resolve())
    best = max((m for m in mounts if rb == m[0] or rb.startswith(m[0].rstrip("/") + "/")), key=lambda m: len(m[0]))

    def cmd(*c):
        try:
            return subprocess.run(c, capture_output=True, text=True, timeout=20, cwd=ROOT).stdout.strip()
        except OSError:
            return None

    dev = best[1].rsplit("/", 1)[-1]
    fs = {"mount": best[0], "device": best[1], "type": best[2], "options": best[3]}
    if best[2] == "ext4":
        try:
            fs["ext4_journal"] = Path(f"/sys/fs/ext4/{dev}/journal_task").read_text().strip() or None
        except OSError:
            pass
    blk = re.sub(r"p?\d+$", "", dev) if not Path(f"/sys/block/{dev}").exists() else dev
    for k in ("write_cache", "rotational"):
        try:
            fs[k] = Path(f"/sys/block/{blk}/queue/{k}").read_text().strip()
        except OSError:
            pass
    fs["fsync_probe"] = fsync_probe(base)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "mem_total": first("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "os": first("/etc/os-release", "PRETTY_NAME", "=") or platform.platform(),
        "tmp_dir": rb,
        "tmp_filesystem": fs,
        "postfix_version": cmd("postconf", "-d", "-h", "mail_version"),
        "postern_version": cmd(str(POSTERN), "--version"),
        "git_commit": cmd("git", "rev-parse", "HEAD"),
        "git_dirty": bool(cmd("git", "status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
    }


def fsync_probe(base: Path, n: int = 200) -> dict:
    """What one durable small write costs here: create a file, write 4 KiB,
    fdatasync, close (n times; median and p90 in microseconds)."""
    d = base / "fsync-probe"
    d.mkdir()
    times = []
    data = b"x" * 4096
    for i in range(n):
        t0 = time.perf_counter()
        fd = os.open(d / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fdatasync(fd)
        os.close(fd)
        times.append(time.perf_counter() - t0)
    dfd = os.open(d, os.O_RDONLY)
    t0 = time.perf_counter()
    os.fsync(dfd)
    dir_fsync = time.perf_counter() - t0
    os.close(dfd)
    shutil.rmtree(d, ignore_errors=True)
    times.sort()
    return {"n": n, "write_4k_fdatasync_p50_us": round(1e6 * times[n // 2]),
            "write_4k_fdatasync_p90_us": round(1e6 * times[int(n * 0.9)]), "dir_fsync_us": round(1e6 * dir_fsync)}


def check_chain(default_cfg: Path) -> list[str]:
    """The bench's default config must run the example's plugins, in order."""
    try:
        ex = tomllib.loads((ROOT / "examples" / "postern.toml").read_text())
        be = tomllib.loads(default_cfg.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        return [f"cannot compare plugin chains: {e}"]
    want = [p["name"] for p in ex.get("plugin", [])]
    have = [p["name"] for p in be.get("plugin", [])]
    if not want:
        log("note: examples/postern.toml has no [[plugin]] chain; benchmarking bench/postern-default.toml as is")
        return []
    if want != have:
        return [f"plugin chain differs from examples/postern.toml: example {want}, bench {have}"]
    return []


# --------------------------------------------------------------------- report


def fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.2f}s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f}ms"
    return f"{s * 1e6:.0f}µs"


def latency_table(h: Histograms, messages: int, cpu: Histograms | None = None) -> tuple[list[str], list[dict]]:
    """Rows of wall time per plugin and stage, with the CPU time of the same
    calls (`cpu`, when the server exports it) in the last two columns."""
    stage_order = ["connect", "helo", "auth", "mail-from", "rcpt-to", "data", "vrfy", "expn", "outcome"]
    rows, out = [], []
    cpu = cpu or Histograms()
    stages = sorted({s for _, s in h.data}, key=lambda s: stage_order.index(s) if s in stage_order else 99)
    hdr = (f"  {'stage':<10} {'plugin':<18} {'calls':>8} {'mean':>9} {'p50':>9} {'p99':>9} {'per msg':>9}"
           f" {'cpu mean':>9} {'cpu/msg':>9}")
    rows.append(hdr)
    rows.append("  " + "-" * (len(hdr) - 2))
    for st in stages:
        keys = sorted(k for k in h.data if k[1] == st)
        for k in keys + [None]:
            d = h.merged([k]) if k else h.merged(keys)
            if k is None and len(keys) == 1:
                continue
            ck = [x for x in ([k] if k else keys) if x in cpu.data]
            c = cpu.merged(ck) if ck else None
            cpu_cols = (f" {fmt_s(c['sum'] / c['count'] if c['count'] else 0):>9} {fmt_s(c['sum'] / messages):>9}"
                        if c and messages else f" {'-':>9} {'-':>9}")
            p50, over50 = h.quantile(d, 0.50)
            p99, over99 = h.quantile(d, 0.99)
            mean = d["sum"] / d["count"] if d["count"] else 0
            per_msg = d["sum"] / messages if messages else 0
            label = k[0] if k else "(all, per call)"
            rows.append(
                f"  {st:<10} {label:<18} {int(d['count']):>8} {fmt_s(mean):>9} "
                f"{('>' if over50 else '') + fmt_s(p50):>9} {('>' if over99 else '') + fmt_s(p99):>9} {fmt_s(per_msg):>9}"
                + cpu_cols
            )
            out.append({
                "stage": st, "plugin": k[0] if k else "*", "calls": int(d["count"]),
                "mean_s": mean, "p50_s": p50, "p99_s": p99, "p50_beyond_last_bucket": over50,
                "p99_beyond_last_bucket": over99, "sum_s": d["sum"], "seconds_per_message": per_msg,
                "cpu_mean_s": c["sum"] / c["count"] if c and c["count"] else None,
                "cpu_seconds_per_message": c["sum"] / messages if c and messages else None,
            })
    allk = list(h.data)
    tot = h.merged(allk)
    ctot = cpu.merged(list(cpu.data)) if cpu.data else None
    rows.append(f"  {'all':<10} {'chain, per message':<18} {'':>8} {'':>9} {'':>9} {'':>9} "
                f"{fmt_s(tot['sum'] / messages if messages else 0):>9} {'':>9} "
                f"{fmt_s(ctot['sum'] / messages) if ctot and messages else '-':>9}")
    out.append({"stage": "*", "plugin": "*", "calls": int(tot["count"]), "seconds_per_message":
                tot["sum"] / messages if messages else 0,
                "cpu_seconds_per_message": ctot["sum"] / messages if ctot and messages else None})
    return rows, out


def check_relay_config(default_cfg: Path, relay_cfg: Path) -> list[str]:
    """The relay job's config must be the receive job's but for [delivery]
    and relay-control's relay_networks: the same chain with the same
    settings, so the two jobs measure the same Postern."""
    try:
        d = tomllib.loads(default_cfg.read_text())
        r = tomllib.loads(relay_cfg.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        return [f"cannot compare {relay_cfg.name} with {default_cfg.name}: {e}"]
    problems = []
    delivery = r.get("delivery", {})
    if delivery.get("enabled") is False or "relayhost" not in delivery:
        problems.append(f"{relay_cfg.name}: [delivery] must be enabled and name a relayhost")
    for cfg in (d, r):
        cfg.pop("delivery", None)
        for p in cfg.get("plugin", []):
            if p.get("name") == "relay-control":
                p.get("config", {}).pop("relay_networks", None)
    if d != r:
        differ = sorted(k for k in set(d) | set(r) if k != "plugin" and d.get(k) != r.get(k))
        dp = {p.get("name"): p for p in d.get("plugin", [])}
        rp = {p.get("name"): p for p in r.get("plugin", [])}
        differ += sorted(f"plugin {n}" for n in set(dp) | set(rp) if dp.get(n) != rp.get(n))
        if not differ:
            differ = ["the plugin order"]
        problems.append(f"{relay_cfg.name} differs from {default_cfg.name} beyond [delivery] and "
                        f"relay-control's relay_networks: {', '.join(differ)}")
    return problems


def job_targets(job: str, targets: list[str]) -> list[str]:
    """The targets of --targets that run in a job, in their order."""
    return targets if job == "receive" else [t for t in targets if t in RELAY_TARGETS]


def make_targets(job: str, names: list[str], base: Path, args) -> tuple[dict[str, Target], CountingSink | None]:
    """The job's targets, and the relay job's sink (which is also its
    `smtp-sink` target when that is one of `names`)."""
    objs: dict[str, Target] = {}
    if job == "relay":
        sink = CountingSink(base)
        for t in names:
            if t == "smtp-sink":
                objs[t] = sink
            elif t == "postfix":
                objs[t] = PostfixTarget(base, sink)
            else:
                objs[t] = PosternTarget(t, RELAY_CONFIG, base, args.keep, sink=sink)
        return objs, sink
    for t in names:
        if t == "smtp-sink":
            objs[t] = SinkTarget(base)
        elif t == "postfix":
            objs[t] = PostfixTarget(base)
        else:
            objs[t] = PosternTarget(t, POSTERN_CONFIGS[t], base, args.keep, args.deliver)
    return objs, None


def run_job(job: str, objs: dict[str, Target], sink: CountingSink | None, args, base: Path) -> dict:
    """Start the job's long-lived servers, run its rounds, stop everything
    (also on an interruption, which is passed on). Returns the runs by
    target, whether any failed and, with --perf, the profiles."""
    runs: dict[str, list[dict]] = {t: [] for t in objs}
    failed = False
    perf_text = None
    try:
        if sink:
            log(f"starting the {job} job's sink (smtp-sink -c) ...")
            sink.start()
        for t, o in objs.items():
            if not o.per_run_process and o is not sink:
                log(f"starting {t} ({job} job) ...")
                o.start()
        # Compile (or load from the cache) every plugin once before timing anything.
        for t, o in objs.items():
            if o.per_run_process:
                log(f"checking {t} ({o.config.name}; compiles plugins into the cache the first time) ...")
                c = subprocess.run([str(POSTERN), "check", "--config", str(o.config)],
                                   capture_output=True, text=True, timeout=900)
                if c.returncode != 0:
                    raise RuntimeError(f"postern check {o.config} failed:\n{c.stdout}{c.stderr}")
        for rnd in range(1, args.rounds + 1):
            for t, o in objs.items():
                r = one_run(o, args, args.messages, sink)
                r["round"] = rnd
                runs[t].append(r)
                extra = f", server CPU {r['server_cpu_ms_per_msg']:.2f} ms/msg, other CPU {r['other_cpu_pct']:.0f}%"
                if "loadgen_elapsed_s" in r:
                    extra += f", smtp-source done after {r['loadgen_elapsed_s']:.2f}s"
                if "drain_after_s" in r:
                    extra += f", queue drained {r['drain_after_s']:.1f}s after"
                log(f"  {job} round {rnd} {t:<18} {r['msgs_per_s']:>9.1f} msg/s  ({r['elapsed_s']:.2f}s, "
                    f"CPU busy {r['cpu_busy_pct']:.0f}%, smtp-source CPU {r['loadgen_cpu_s']:.2f}s{extra})"
                    + ("" if r["ok"] else "  FAILED"))
                if not r["ok"]:
                    failed = True
                    for p in r["problems"]:
                        log(f"      {p}")
                for w in r.get("warnings", [])[:3]:
                    log(f"      note: {w}")
        if args.perf:
            perf_text = {}
            for t, o in objs.items():
                if isinstance(o, PosternTarget):
                    perf_text[t] = profile(o, args, base, sink)
    finally:
        for t, o in objs.items():
            try:
                o.stop()
            except Exception as e:  # noqa: BLE001 - best effort cleanup
                log(f"warning: stopping {t}: {e}")
        if sink:
            sink.stop()
    return {"runs": runs, "failed": failed, "perf_text": perf_text}


def summarize(objs: dict[str, Target], runs: dict[str, list[dict]], args) -> dict[str, dict]:
    """Per target: medians (of the runs that passed, if any did), min, max,
    CPU, machine load and memory."""
    summary: dict[str, dict] = {}
    for t, o in objs.items():
        ok = [r["msgs_per_s"] for r in runs[t] if r["ok"]]
        allr = [r["msgs_per_s"] for r in runs[t]]
        vals = ok or allr
        summary[t] = {
            "median_msgs_per_s": statistics.median(vals) if vals else 0,
            "min_msgs_per_s": min(vals) if vals else 0,
            "max_msgs_per_s": max(vals) if vals else 0,
            "runs_ok": len(ok),
            "runs": len(allr),
            "memory": o.memory(),
        }
        cpu = [r["server_cpu_ms_per_msg"] for r in runs[t] if "server_cpu_ms_per_msg" in r]
        if cpu:
            summary[t]["server_cpu_ms_per_msg_median"] = statistics.median(cpu)
        busy = [r["cpu_busy_pct"] for r in runs[t]]
        summary[t]["cpu_busy_pct_median"] = statistics.median(busy) if busy else 0
        other = [r["other_cpu_pct"] for r in runs[t]]
        summary[t]["other_cpu_pct_max"] = max(other) if other else 0
        lg = [1000 * r["loadgen_cpu_s"] / args.messages for r in runs[t]]
        summary[t]["loadgen_cpu_ms_per_msg_median"] = statistics.median(lg) if lg else 0
        sink_cpu = [1000 * r["sink_cpu_s"] / args.messages for r in runs[t] if "sink_cpu_s" in r]
        if sink_cpu and not isinstance(o, CountingSink):
            summary[t]["sink_cpu_ms_per_msg_median"] = statistics.median(sink_cpu)
        gen = [r["loadgen_elapsed_s"] for r in runs[t] if "loadgen_elapsed_s" in r]
        if gen:
            summary[t]["loadgen_elapsed_s_median"] = statistics.median(gen)
        if isinstance(o, PosternTarget) and o.startup_s:
            summary[t]["startup_s_median"] = round(statistics.median(o.startup_s), 2)
    return summary


def job_ratios(job: str, summary: dict[str, dict]) -> dict[str, float]:
    def med(t):
        return summary.get(t, {}).get("median_msgs_per_s")

    return {f"{a} / {b}": round(med(a) / med(b), 3) for a, b in RATIOS[job] if med(a) and med(b)}


def print_job(job: str, objs: dict[str, Target], runs: dict[str, list[dict]], summary: dict[str, dict],
              args, mode: str) -> None:
    """The job's throughput table and the notes under it."""
    log("")
    log(f"{job.capitalize()} throughput ({args.sessions} sessions, {args.messages} × {args.size}-byte messages "
        f"per run, {mode}; median of {args.rounds} run(s))")
    hdr = (f"  {'target':<18} {'msg/s':>9} {'min':>9} {'max':>9} {'ok':>5} {'srv CPU/msg':>12} "
           f"{'gen CPU/msg':>12} {'busy':>5} {'other':>6} {'peak memory':>12}")
    log(hdr)
    log("  " + "-" * (len(hdr) - 2))
    for t in objs:
        s = summary[t]
        mem = s["memory"].get("peak_rss_kib", 0)
        cpu = s.get("server_cpu_ms_per_msg_median")
        log(f"  {t:<18} {s['median_msgs_per_s']:>9.1f} {s['min_msgs_per_s']:>9.1f} {s['max_msgs_per_s']:>9.1f} "
            f"{s['runs_ok']:>2}/{s['runs']:<2} {(f'{cpu:.3f} ms' if cpu is not None else '-'):>12} "
            f"{s['loadgen_cpu_ms_per_msg_median']:>9.3f} ms {s['cpu_busy_pct_median']:>4.0f}% {s['other_cpu_pct_max']:>5.0f}% "
            f"{mem / 1024:>8.1f} MiB")
    if job == "relay":
        log("  msg/s: messages / time from smtp-source's start until the sink had counted every one of them")
        log("  srv CPU/msg: user+sys time of the server's processes per message (median; postfix: master and all")
        log("  children, including its smtp deliveries; smtp-sink: the sink itself); gen: smtp-source's; busy: whole")
        log("  machine during the runs (median); other: the largest share of the machine used by anything but")
        log("  server, smtp-source, sink and run.py during a run (noise);")
    else:
        log("  srv CPU/msg: user+sys time of the server's processes per message (median; postfix: master and all")
        log("  children, including its discard deliveries); gen: smtp-source's; busy: whole machine during the")
        log("  runs (median); other: the largest share of the machine used by anything else during a run (noise);")
    log("  peak memory: postern and smtp-sink VmHWM; postfix: peak Pss summed over master and all children")
    for t in objs:
        e = summary[t]["memory"].get("at_end_of_last_run_kib")
        if e:
            log(f"  {t}: at the end of its last run VmRSS {e.get('VmRSS', 0) / 1024:.1f} MiB = anon "
                f"{e.get('RssAnon', 0) / 1024:.1f} + file {e.get('RssFile', 0) / 1024:.1f} + shmem "
                f"{e.get('RssShmem', 0) / 1024:.1f}; Pss {e.get('Pss', 0) / 1024:.1f} MiB")
    if job == "relay":
        parts = [f"{t} {summary[t]['sink_cpu_ms_per_msg_median']:.3f} ms" for t in objs
                 if "sink_cpu_ms_per_msg_median" in summary[t]]
        if parts:
            log(f"  the sink's CPU per message (median) behind: {', '.join(parts)}")
        parts = [f"{t} {summary[t]['loadgen_elapsed_s_median']:.2f}s" for t in objs
                 if "loadgen_elapsed_s_median" in summary[t]]
        log(f"  smtp-source itself was done after (median): {', '.join(parts)}")
    noisy = [f"{t} round {r['round']} ({r['other_cpu_pct']:.0f}%)" for t in objs for r in runs[t]
             if r["other_cpu_pct"] > 10]
    if noisy:
        log(f"  DISTURBED: other processes used more than 10% of the machine during: {', '.join(noisy)}")
    if "postfix" in objs:
        m = summary["postfix"]["memory"]
        progs = ", ".join(f"{k} {v / 1024:.1f}" for k, v in sorted(m.get("by_program_hwm_kib", {}).items()))
        after = "the sink had every message" if job == "relay" else "smtp-source finished"
        log(f"  postfix per program, largest single-process VmHWM in MiB: {progs}")
        log(f"  postfix: peak VmRSS sum {m.get('peak_rss_sum_kib', 0) / 1024:.1f} MiB over up to {m.get('peak_processes', 0)} processes; "
            f"queue drained {statistics.median([r.get('drain_after_s', 0) for r in runs['postfix']] or [0]):.2f}s (median) after {after}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get
    ap.add_argument("--quick", action="store_true", help="development run: 3000 messages, 1 round")
    ap.add_argument("--jobs", default=env("BENCH_JOBS", ",".join(JOBS)),
                    help="comma-separated, from " + ",".join(JOBS) + " (default: both, in that order)")
    ap.add_argument("--sessions", "-s", type=int, default=int(env("BENCH_SESSIONS", 20)))
    ap.add_argument("--messages", "-m", type=int, default=None, help="messages per measured run (default 20000, BENCH_MESSAGES)")
    ap.add_argument("--rounds", "-r", type=int, default=None, help="rounds (default 3, BENCH_ROUNDS)")
    ap.add_argument("--size", "-l", type=int, default=int(env("BENCH_SIZE", 4096)), help="message body length, bytes")
    ap.add_argument("--warmup", type=int, default=None, help="messages of the warm-up run (default: 10 per session, at least 300)")
    ap.add_argument("--targets", default=env("BENCH_TARGETS", ",".join(TARGETS)),
                    help="comma-separated, from " + ",".join(TARGETS + EXTRA_TARGETS) + " (default: the first four); "
                         "the relay job runs those of " + ",".join(RELAY_TARGETS))
    ap.add_argument("--deliver", action="store_true",
                    help="receive job: Postern delivers what it accepts to Maildirs ([delivery] enabled) instead of holding it")
    ap.add_argument("--allow-chain-drift", action="store_true",
                    help="run even if bench/postern-default.toml no longer has the example's plugin chain "
                         "(or postern-relay.toml no longer postern-default.toml's)")
    ap.add_argument("--reuse", action="store_true", help="smtp-source -d: several messages per connection (default: one connection per message)")
    ap.add_argument("--counter", action="store_true", help="smtp-source -c: show its running counter")
    ap.add_argument("--perf", action="store_true",
                    help="also profile one more run of each postern target of each job with perf record "
                         "(bench/results/perf-<target>.txt, perf-<target>-relay.txt)")
    ap.add_argument("--quiet-wait", type=float, default=float(env("BENCH_QUIET_WAIT", 120)),
                    help="before each run, wait up to this many seconds for the machine to be idle (0: don't)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs, spools)")
    ap.add_argument("--tmpdir", default=env("BENCH_TMPDIR"), help="where the temporary directory goes (default: $TMPDIR or /tmp)")
    ap.add_argument("--output", default=str(RESULTS / "latest.json"))
    args = ap.parse_args()
    if args.messages is None:
        args.messages = int(env("BENCH_MESSAGES", 3000 if args.quick else 20000))
    if args.rounds is None:
        args.rounds = int(env("BENCH_ROUNDS", 1 if args.quick else 3))
    if args.warmup is None:
        args.warmup = max(300, 10 * args.sessions)
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    for j in jobs:
        if j not in JOBS:
            ap.error(f"unknown job {j!r} (known: {', '.join(JOBS)})")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS + EXTRA_TARGETS:
            ap.error(f"unknown target {t!r} (known: {', '.join(TARGETS + EXTRA_TARGETS)})")
    plan = {j: job_targets(j, targets) for j in jobs}
    for j in jobs:
        if not plan[j]:
            log(f"note: none of the targets runs in the {j} job; skipping it")
    plan = {j: ts for j, ts in plan.items() if ts}
    if not plan:
        ap.error("nothing to run")
    wanted = {t for ts in plan.values() for t in ts}
    if os.geteuid() != 0 and "postfix" in wanted:
        sys.exit("bench: Postfix's master must start as root; run as root or drop the postfix target (--targets)")
    if any(t.startswith("postern") for t in wanted) and not POSTERN.exists():
        sys.exit(f"bench: {POSTERN} is missing; run `make build` first")
    tool("smtp-source")

    raise_nofile()
    base = Path(tempfile.mkdtemp(prefix="postern-bench-", dir=args.tmpdir))
    os.chmod(base, 0o755)  # Postfix's unprivileged daemons walk into it
    facts = machine_facts(base)
    warnings = check_chain(BENCH / "postern-default.toml")
    if "postern-default" in plan.get("relay", []):
        warnings += check_relay_config(BENCH / "postern-default.toml", RELAY_CONFIG)
    for w in warnings:
        log(f"note: {w}")
    if warnings and "postern-default" in wanted and not args.allow_chain_drift:
        shutil.rmtree(base, ignore_errors=True)
        sys.exit("bench: update bench/postern-default.toml to the example's default chain, and "
                 "bench/postern-relay.toml to postern-default.toml (or pass --allow-chain-drift)")

    conn = "several messages per connection (-d)" if args.reuse else "one connection per message"
    modes = {
        "receive": conn + ("; postern delivers to Maildirs" if args.deliver
                           else "; postern holds what it accepts (no delivery)"),
        "relay": conn + f"; to {RELAY_RCPT}, relayed to one smtp-sink, timed until it has every message",
    }
    log(f"Postern benchmark: {args.sessions} sessions, {args.messages} messages of {args.size} bytes per run, "
        f"{args.rounds} round(s); jobs: " + "; ".join(f"{j} ({', '.join(ts)})" for j, ts in plan.items()))
    fs = facts["tmp_filesystem"]
    log(f"machine: {facts['nproc']} CPUs ({facts['cpu_model']}), {facts['mem_total']}, kernel {facts['kernel']}, "
        f"temp dir {base} on {fs['type']} ({fs['device']}"
        + (f", journal {fs['ext4_journal'] or 'none'}" if "ext4_journal" in fs else "")
        + (f", write cache {fs['write_cache']}" if "write_cache" in fs else "") + ")")
    fp = fs["fsync_probe"]
    log(f"fsync probe: create + 4 KiB write + fdatasync p50 {fp['write_4k_fdatasync_p50_us']} µs, "
        f"p90 {fp['write_4k_fdatasync_p90_us']} µs; directory fsync {fp['dir_fsync_us']} µs")
    log(f"work dir: {base}")

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    done: dict[str, dict] = {}
    for job, names in plan.items():
        log("")
        log(f"{job} job: {modes[job]}")
        objs, sink = make_targets(job, names, base, args)
        try:
            done[job] = run_job(job, objs, sink, args, base)
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        done[job]["objs"] = objs

    # ----------------------------------------------------------------- report
    failed = any(d["failed"] for d in done.values())
    for job, d in done.items():
        d["summary"] = summarize(d["objs"], d["runs"], args)
        d["ratios"] = job_ratios(job, d["summary"])
        print_job(job, d["objs"], d["runs"], d["summary"], args, modes[job])

    if any(d["ratios"] for d in done.values()):
        log("")
        log("Ratios (of the medians)")
    for job, d in done.items():
        for k, v in d["ratios"].items():
            goal = GOALS[job].get(k)
            mark = "" if goal is None else f"   goal ≥ {goal:g}: {'met' if v >= goal else 'not met'}"
            log(f"  {job + ':':<9}{k:<38} {v:>7.3f}{mark}")

    receive = done.get("receive", {"objs": {}, "runs": {}})
    objs, runs = receive["objs"], receive["runs"]
    latency = None
    if "postern-default" in objs and objs["postern-default"].hist_total.data:
        h = objs["postern-default"].hist_total
        n_msgs = args.messages * len(runs["postern-default"])
        rows, latency = latency_table(h, n_msgs, objs["postern-default"].cpu_total)
        log("")
        log(f"Plugin call latency, postern-default, receive job (all measured runs: {n_msgs} messages; wall time")
        log("  of one call, instantiation included when it happens; p50/p99 interpolated inside histogram buckets;")
        log("  'per msg' = total time in that plugin/stage divided by messages; 'cpu': the CPU time the calling")
        log("  thread spent in those calls, without the time a call waited to be scheduled)")
        for r in rows:
            log(r)
        chain_cpu = latency[-1]["cpu_seconds_per_message"]
        if chain_cpu is not None:
            goal = GOALS["receive"]["chain CPU per message (µs)"]
            log(f"  chain CPU per message {chain_cpu * 1e6:.0f} µs   goal ≤ {goal} µs: "
                f"{'met' if chain_cpu * 1e6 <= goal else 'not met'}")
        inst = objs["postern-default"].instances
        log(f"  plugin instances: {inst['created']} created, {inst['reused']} handed on to another session"
            f" ({inst['created'] / n_msgs:.3f} and {inst['reused'] / n_msgs:.2f} per message)")
        if h.corrected:
            log("  note: the exposed histogram buckets were accumulated twice (bucket counts above _count);")
            log("        corrected here. Bug in host/postern/src/server/metrics.rs: encode_histogram() wants per-bucket counts.")

    if "postern-mailauth" in objs and objs["postern-mailauth"].hist_total.data:
        n_msgs = args.messages * len(runs["postern-mailauth"])
        rows, _ = latency_table(objs["postern-mailauth"].hist_total, n_msgs, objs["postern-mailauth"].cpu_total)
        log("")
        log(f"Plugin call latency, mail-auth in postern-mailauth ({n_msgs} messages; the host's SPF,")
        log("  DKIM, ARC and DMARC work included, DNS from run.py's loopback stub)")
        for r in rows[:2] + [r for r in rows if "mail-auth" in r]:
            log(r)

    kv_latency = {}
    for t, o in objs.items():
        h = getattr(o, "kv_total", None)
        if not h or not h.data:
            continue
        n_msgs = args.messages * len(runs[t])
        if not kv_latency:
            log("")
            log("kv call latency, receive job (wall time of one call through the host's guard, all measured runs;")
            log("  p50/p99 interpolated inside histogram buckets)")
            log(f"  {'target':<18} {'op':<14} {'calls':>9} {'per msg':>8} {'mean':>9} {'p50':>9} {'p99':>9}")
        kv_latency[t] = {}
        for key in sorted(h.data) + [None]:
            d = h.merged([key] if key else list(h.data))
            p50, _ = h.quantile(d, 0.50)
            p99, _ = h.quantile(d, 0.99)
            mean = d["sum"] / d["count"] if d["count"] else 0
            op = key[0] if key else "(all)"
            kv_latency[t][op] = {"calls": int(d["count"]), "mean_s": mean, "p50_s": p50, "p99_s": p99}
            log(f"  {t:<18} {op:<14} {int(d['count']):>9} {d['count'] / n_msgs:>8.2f} {fmt_s(mean):>9} "
                f"{fmt_s(p50):>9} {fmt_s(p99):>9}")

    for job, d in done.items():
        for name, text in (d.get("perf_text") or {}).items():
            if not text:
                continue
            label = name + ("-relay" if job == "relay" else "")
            log("")
            log(f"perf ({name}, {job} job, one more run; bench/results/perf-{label}.txt has the full report)")
            for line in text.splitlines()[:45]:
                log("  " + line[:150].rstrip())

    result = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": facts,
        "params": {
            "sessions": args.sessions, "messages": args.messages, "size": args.size, "rounds": args.rounds,
            "warmup": args.warmup, "reuse_connections": args.reuse, "jobs": list(plan), "targets": targets,
            "postern_delivery": "maildir" if args.deliver else "held",
            "helo": HELO, "sender": SENDER, "recipient": RCPT, "relay_recipient": RELAY_RCPT,
        },
        "notes": warnings,
        "ratios": {job: d["ratios"] for job, d in done.items()},
        "goals": {job: GOALS[job] for job in done},
        "jobs": {
            job: {"mode": modes[job], "targets": list(d["objs"]), "summary": d["summary"],
                  "ratios": d["ratios"], "runs": d["runs"]}
            for job, d in done.items()
        },
        "plugin_latency": latency,
        "kv_latency": kv_latency,
        "plugin_instances": objs["postern-default"].instances if "postern-default" in objs else None,
        "histogram_double_accumulation_corrected": bool(
            "postern-default" in objs and objs["postern-default"].hist_total.corrected
        ),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log("")
    log(f"wrote {out}")
    if args.keep:
        log(f"kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    if failed:
        log("FAILED: some runs did not deliver every message cleanly (see above)")
        return 1
    return 0


def profile(t: PosternTarget, args, base: Path, sink: CountingSink | None = None) -> str | None:
    """One more run of a Postern target under `perf record` (with `sink`: a
    relay run, recorded until the sink has every message); returns the
    report, also written to bench/results/perf-<target>[-relay].txt."""
    perf = shutil.which("perf")
    if not perf:
        log("note: perf not installed (apt-get install linux-perf); skipping --perf")
        return None
    rcpt = RELAY_RCPT if sink else RCPT
    label = t.name + ("-relay" if sink else "")
    t.start()
    try:
        w = smtp_source(t.port, args, args.warmup, rcpt, sink)
        if sink:
            w["stderr"] += sink.settle(args.warmup)
        if w["rc"] != 0 or w["stderr"]:
            raise RuntimeError(f"warm-up failed: {w}")
        data = base / f"perf-{label}.data"
        rec = subprocess.Popen([perf, "record", "-F", "499", "-g", "-p", str(t.proc.pid), "-o", str(data)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        n = min(args.messages, 5000)
        r = smtp_source(t.port, args, n, rcpt, sink)
        rec.send_signal(signal.SIGINT)
        rec.wait(120)
        if sink:
            sink.settle(n)
        log(f"  perf run, {label}: {r['msgs_per_s']:.1f} msg/s (under perf)")
    finally:
        t.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = []
    for title, extra in [
        ("by shared object", ["--sort", "dso"]),
        ("by symbol (self time)", ["--sort", "dso,sym"]),
    ]:
        p = subprocess.run([perf, "report", "-i", str(data), "--stdio", "--no-children", "-g", "none",
                            "--percent-limit", "0.7", *extra], capture_output=True, text=True, timeout=600)
        body = "\n".join(l for l in p.stdout.splitlines() if l.strip() and not l.startswith("#"))
        parts.append(f"== {title}\n{body}")
    p = subprocess.run([perf, "report", "-i", str(data), "--stdio", "--children", "-g", "none",
                        "--percent-limit", "3", "--sort", "sym"], capture_output=True, text=True, timeout=600)
    body = "\n".join(l for l in p.stdout.splitlines() if l.strip() and not l.startswith("#"))
    parts.append(f"== inclusive (children) by symbol, ≥3%\n{body}")
    text = "\n\n".join(parts)
    # Compiled plugins are cached as <sha256>-<engine hash>.cwasm: name them.
    for line in t.logfile.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("message") == "plugin loaded" and rec.get("sha256"):
            text = re.sub(rf"\b{re.escape(rec['sha256'])}[0-9a-f]*-[0-9a-f]+\.cwasm",
                          f"plugin:{rec['plugin']}", text)
    (RESULTS / f"perf-{label}.txt").write_text(text + "\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
