#!/usr/bin/env python3
"""Scale check: many idle connections, little memory, no starvation.

Starts Postern (bench/postern-default.toml: every default plugin, connection
limits raised to 20000) with a raised RLIMIT_NOFILE, then

  1. makes --fresh (50) full SMTP sessions one after the other (connect, EHLO,
     MAIL, RCPT, DATA, 250, QUIT) and times each: the baseline;
  2. opens --connections (10,000) connections that read the 220 greeting and
     then stay idle, spread over several loopback source addresses
     (127.0.0.2, 127.0.0.3, ...; loopback answers for all of 127/8) so the
     client does not run out of ephemeral ports;
  3. reads Postern's VmRSS (and the active-session gauge from /metrics);
  4. makes the same fresh sessions again while the idle ones are held;
  5. checks that the idle connections are still open, closes them, stops Postern.

Prints RSS before/after and per idle connection, and the fresh sessions'
latency (p50, p95, max) with and without the idle load. The goal from the
issue, "10,000 idle connections held in under 200 MB RSS without starving new
sessions", is reported, not asserted. Fails loudly (exit 1) if the idle
connections cannot all be established or a fresh session fails.
Writes bench/results/idle.json. Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import selectors
import shutil
import smtplib
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (shares the Postern process handling)

MESSAGE = (
    "From: <bench@client.bench>\r\nTo: <rcpt@bench.test>\r\n"
    "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <idle-{n}@client.bench>\r\n"
    "Subject: idle check {n}\r\n\r\n" + "La de da de da.\r\n" * 200
)


def fresh_sessions(port: int, n: int) -> list[float]:
    """n full SMTP sessions one after the other; seconds each."""
    out = []
    for i in range(n):
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.bench", timeout=60) as s:
            refused = s.sendmail("bench@client.bench", ["rcpt@bench.test"], MESSAGE.format(n=i))
            if refused:
                raise RuntimeError(f"recipient refused: {refused}")
        out.append(time.monotonic() - t0)
    return out


def short(text: str, width: int = 400) -> str:
    return "\n".join(l if len(l) <= width else l[:width] + " ..." for l in text.splitlines())


def summary(lat: list[float]) -> dict:
    s = sorted(lat)
    return {
        "n": len(s),
        "p50_ms": round(1000 * statistics.median(s), 2),
        "p95_ms": round(1000 * s[max(0, int(round(0.95 * len(s))) - 1)], 2),
        "max_ms": round(1000 * s[-1], 2),
        "mean_ms": round(1000 * statistics.fmean(s), 2),
    }


def open_idle(port: int, count: int, sources: list[str], batch: int, timeout: float):
    """Open `count` connections that each read a 220 greeting; returns
    (sockets, failures, seconds). Connections are made `batch` at a time,
    non-blocking, spread round-robin over the source addresses."""
    sel = selectors.DefaultSelector()
    done: list[socket.socket] = []
    failures: dict[str, int] = {}
    examples: list[str] = []
    started = 0
    pending: dict[socket.socket, dict] = {}
    t0 = time.monotonic()
    last_report = t0

    def fail(s: socket.socket, why: str) -> None:
        failures[why.split(":")[0]] = failures.get(why.split(":")[0], 0) + 1
        if len(examples) < 10:
            examples.append(why)
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        pending.pop(s, None)
        s.close()

    while len(done) + sum(failures.values()) < count:
        while started < count and len(pending) < batch:
            src = sources[started % len(sources)]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.bind((src, 0))
                err = s.connect_ex(("127.0.0.1", port))
            except OSError as e:
                started += 1
                failures[f"bind/connect {errno.errorcode.get(e.errno, e.errno)}"] = failures.get(
                    f"bind/connect {errno.errorcode.get(e.errno, e.errno)}", 0) + 1
                s.close()
                continue
            started += 1
            if err not in (0, errno.EINPROGRESS):
                failures[f"connect {errno.errorcode.get(err, err)}"] = failures.get(
                    f"connect {errno.errorcode.get(err, err)}", 0) + 1
                s.close()
                continue
            pending[s] = {"t": time.monotonic(), "buf": b""}
            sel.register(s, selectors.EVENT_READ)
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(512)
            except OSError as e:
                fail(s, f"recv: {e}")
                continue
            if not data:
                fail(s, "closed before the greeting: " + pending[s]["buf"].decode(errors="replace"))
                continue
            pending[s]["buf"] += data
            buf = pending[s]["buf"]
            if b"\r\n" in buf:
                line = buf.split(b"\r\n")[0]
                if line.startswith(b"220 ") and buf.endswith(b"\r\n"):
                    sel.unregister(s)
                    pending.pop(s)
                    done.append(s)
                elif not line.startswith(b"220-"):
                    fail(s, "greeting: " + line.decode(errors="replace"))
        now = time.monotonic()
        for s, st in list(pending.items()):
            if now - st["t"] > timeout:
                fail(s, f"timeout: no greeting within {timeout:.0f}s")
        if now - last_report > 5:
            print(f"  ... {len(done)} idle connections open, {len(pending)} pending, "
                  f"{sum(failures.values())} failed", flush=True)
            last_report = now
    sel.close()
    return done, failures, examples, time.monotonic() - t0


def still_open(socks: list[socket.socket]) -> tuple[int, int]:
    """(open, closed_by_server): a readable socket with no data was closed."""
    closed = 0
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    for key, _ in sel.select(timeout=0.5):
        try:
            data = key.fileobj.recv(512, socket.MSG_PEEK)
        except OSError:
            data = b""
        if not data or not data.startswith(b"220"):
            closed += 1
    sel.close()
    return len(socks) - closed, closed


def tcp_counters() -> dict[str, int]:
    """Kernel TCP counters that tell an accept-queue overflow (listen backlog)."""
    want = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPReqQFullDoCookies", "TCPReqQFullDrop")
    lines = Path("/proc/net/netstat").read_text().splitlines()
    out = {}
    for head, vals in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            for k, v in zip(head.split()[1:], vals.split()[1:]):
                if k in want:
                    out[k] = int(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", "-n", type=int, default=10000)
    ap.add_argument("--fresh", type=int, default=50, help="full sessions timed before and during the idle load")
    ap.add_argument("--sources", type=int, default=10, help="loopback source addresses (127.0.0.2 ...)")
    ap.add_argument("--batch", type=int, default=100,
                    help="connections in flight while opening (above the server's listen backlog, a burst overflows it)")
    ap.add_argument("--config", default=str(bench.BENCH / "postern-default.toml"))
    ap.add_argument("--hold", type=float, default=2.0, help="seconds to hold before measuring")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--output", default=str(bench.RESULTS / "idle.json"))
    args = ap.parse_args()

    want = args.connections + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
        except (ValueError, OSError) as e:
            sys.exit(f"idle: cannot raise RLIMIT_NOFILE to {want} ({e}); run as root or raise `ulimit -n`")
    if not bench.POSTERN.exists():
        sys.exit(f"idle: {bench.POSTERN} is missing; run `make build` first")

    base = Path(tempfile.mkdtemp(prefix="postern-idle-"))
    t = bench.PosternTarget("postern-idle", Path(args.config), base, args.keep)
    sources = [f"127.0.0.{i}" for i in range(2, 2 + args.sources)]
    result: dict = {"connections_wanted": args.connections, "sources": sources, "config": args.config}
    socks: list[socket.socket] = []
    ok = True
    try:
        print(f"starting postern ({args.config}) with RLIMIT_NOFILE raised ...", flush=True)
        t.start()
        pid = t.proc.pid
        limits = Path(f"/proc/{pid}/limits").read_text()
        result["postern_nofile"] = next((l.split()[3:5] for l in limits.splitlines() if l.startswith("Max open files")), None)
        # warm up the plugin code paths, then the baseline
        fresh_sessions(t.port, 5)
        time.sleep(0.5)
        rss0 = bench.proc_status(pid)
        base_lat = fresh_sessions(t.port, args.fresh)
        result["rss_before_kib"] = rss0.get("VmRSS")
        result["fresh_without_idle"] = summary(base_lat)
        print(f"postern pid {pid}, VmRSS {rss0.get('VmRSS', 0) / 1024:.1f} MiB; "
              f"{args.fresh} fresh sessions: p50 {result['fresh_without_idle']['p50_ms']} ms", flush=True)

        print(f"opening {args.connections} idle connections from {len(sources)} source addresses ...", flush=True)
        tcp0 = tcp_counters()
        socks, failures, examples, secs = open_idle(t.port, args.connections, sources, args.batch, timeout=60)
        tcp1 = tcp_counters()
        result["tcp_counters_delta"] = {k: tcp1[k] - tcp0.get(k, 0) for k in tcp1}
        result["idle_open"] = len(socks)
        result["idle_open_seconds"] = round(secs, 2)
        result["idle_failures"] = failures
        result["idle_failure_examples"] = examples
        print(f"  {len(socks)} open in {secs:.1f}s ({len(socks) / secs:.0f}/s); failures: {failures or 'none'}", flush=True)
        for e in examples[:5]:
            print(f"    {e}")
        if any(result["tcp_counters_delta"].values()):
            print(f"  kernel TCP counters while opening (whole machine): {result['tcp_counters_delta']}")
            print("  (ListenOverflows/SyncookiesSent: the server's accept queue (listen backlog) overflowed; clients")
            print("   then hold half-open connections that get no greeting until they send something)")
        if len(socks) < args.connections:
            ok = False
            print(f"FAILED: only {len(socks)} of {args.connections} idle connections could be established", flush=True)
            print("postern log, last lines:\n" + short(t.log_tail(8)))

        time.sleep(args.hold)
        rss1 = bench.proc_status(pid)
        samples = t.scrape()
        active = bench.metric(samples, "postern_sessions_active")
        result["sessions_active_gauge"] = int(active)
        result["rss_idle_kib"] = rss1.get("VmRSS")
        result["rss_idle_breakdown_kib"] = {k: rss1.get(k, 0) for k in ("RssAnon", "RssFile", "RssShmem")}
        result["pss_idle_kib"] = bench.proc_pss_kib(pid)
        result["plugin_errors"] = {
            f"{l.get('plugin')}/{l.get('stage')}/{l.get('kind')}": int(v)
            for n, l, v in samples if n == "postern_plugin_errors_total"
        }
        result["replies"] = bench.by_label(samples, "postern_replies_total", "code")
        result["hwm_idle_kib"] = rss1.get("VmHWM")
        per_conn = (rss1.get("VmRSS", 0) - rss0.get("VmRSS", 0)) / max(1, len(socks))
        result["rss_per_idle_connection_kib"] = round(per_conn, 2)
        result["threads"] = len(os.listdir(f"/proc/{pid}/task"))

        during = fresh_sessions(t.port, args.fresh)
        result["fresh_with_idle"] = summary(during)
        rss2 = bench.proc_status(pid)
        result["rss_after_fresh_kib"] = rss2.get("VmRSS")
        open_now, closed = still_open(socks)
        result["idle_still_open"] = open_now
        result["idle_closed_by_server"] = closed
        if closed:
            ok = False
            print(f"FAILED: the server closed {closed} idle connections during the test", flush=True)
    except Exception as e:  # noqa: BLE001 - report, clean up, fail
        ok = False
        print(f"FAILED: {e}", flush=True)
        if t.proc:
            print("postern log, last lines:\n" + short(t.log_tail(8)))
    finally:
        for s in socks:
            s.close()
        t.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    if "rss_idle_kib" in result:
        goal_mb = 200
        rss_mb = result["rss_idle_kib"] * 1024 / 1e6
        print()
        print(f"Idle connections (Postern, {Path(args.config).name}, {result['idle_open']} held from {len(sources)} source addresses)")
        print(f"  VmRSS before             {result['rss_before_kib'] / 1024:8.1f} MiB")
        print(f"  VmRSS with idle conns    {result['rss_idle_kib'] / 1024:8.1f} MiB  ({rss_mb:.0f} MB; goal < {goal_mb} MB: "
              f"{'met' if rss_mb < goal_mb and result['idle_open'] >= args.connections else 'not met'})")
        print(f"  per idle connection      {result['rss_per_idle_connection_kib']:8.1f} KiB")
        b = result["rss_idle_breakdown_kib"]
        print(f"    = anon {b['RssAnon'] / 1024:.1f} + file {b['RssFile'] / 1024:.1f} + shmem {b['RssShmem'] / 1024:.1f} MiB; "
              f"Pss {result['pss_idle_kib'] / 1024:.1f} MiB")
        print(f"  VmHWM                    {result['hwm_idle_kib'] / 1024:8.1f} MiB  (peak, while the connections were opened)")
        if result["plugin_errors"]:
            print(f"  plugin errors: {result['plugin_errors']}")
        print(f"  sessions_active gauge    {result['sessions_active_gauge']:8d}")
        print(f"  threads                  {result['threads']:8d}")
        if "fresh_with_idle" in result:
            a, b = result["fresh_without_idle"], result["fresh_with_idle"]
            print(f"  {args.fresh} fresh full sessions   p50 {a['p50_ms']:.2f} ms, p95 {a['p95_ms']:.2f} ms, max {a['max_ms']:.2f} ms (no idle load)")
            print(f"  {'':<24} p50 {b['p50_ms']:.2f} ms, p95 {b['p95_ms']:.2f} ms, max {b['max_ms']:.2f} ms (with the idle connections)")
            print(f"  idle connections still open afterwards: {result['idle_still_open']}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
