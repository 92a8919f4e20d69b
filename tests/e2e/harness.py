"""End-to-end harness: starts the real `postern` binary on an ephemeral port
with a generated configuration, collects its JSON log, and offers small
SMTP helpers (raw sockets; tests also use smtplib and swaks directly)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BIN = Path(os.environ.get("POSTERN_BIN", TARGET / "release" / "postern"))
# POSTERN_CONTRACT=0.1 runs the suite against the plugins built for the
# frozen postern:policy@0.1.0 contract (`make plugins` builds both), to show
# that 0.1 components still load and answer as their 0.2 rebuilds do.
# (The Python and JavaScript plugins have one build, for 0.2, in both runs.)
CONTRACT = os.environ.get("POSTERN_CONTRACT", "0.2")
if CONTRACT == "0.1":
    WASM_DIR = TARGET / "contract-0.1" / "wasm32-wasip2" / "release"
else:
    WASM_DIR = TARGET / "wasm32-wasip2" / "release"
SCRIPT_WASM_DIR = ROOT / "target" / "plugins"
CACHE_DIR = TARGET / "test-plugin-cache"


def wasm(name: str) -> Path:
    """Path of a built component: Rust crates by crate name, others by folder."""
    for p in (WASM_DIR / f"{name.replace('-', '_')}.wasm", SCRIPT_WASM_DIR / f"{name}.wasm"):
        if p.exists():
            return p
    raise FileNotFoundError(f"component {name} is not built (run `make plugins`)")


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def plugin(name: str, component: str | None = None, config: dict | None = None, **settings) -> dict:
    """A [[plugin]] entry; `component` defaults to `name`."""
    return {"name": name, "path": str(wasm(component or name)), "config": config or {}, **settings}


def render_config(server: dict, plugins: list[dict], extra: str = "") -> str:
    """The file; a server setting given as None is left out."""
    lines = ["[server]"]
    for k, v in server.items():
        if v is not None:
            lines.append(f"{k} = {toml_value(v)}")
    for p in plugins:
        lines.append("")
        lines.append("[[plugin]]")
        for k, v in p.items():
            if k != "config":
                lines.append(f"{k} = {toml_value(v)}")
        lines.append("[plugin.config]")
        for k, v in p.get("config", {}).items():
            lines.append(f"{json.dumps(k)} = {toml_value(v)}")
    return "\n".join(lines) + "\n" + extra


class Server:
    """A running postern process."""

    def __init__(self, tmp: Path, plugins: list[dict] | None = None, extra: str = "", **server):
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.tmp / "data"
        self.config_path = self.tmp / "postern.toml"
        self.base = dict(server)
        self.write_config(plugins, extra)
        self.proc: subprocess.Popen | None = None
        self.logs: list[dict] = []
        self.raw_log: list[str] = []
        self.port = 0
        self.addresses: list[str] = []
        self._lock = threading.Lock()

    def write_config(self, plugins: list[dict] | None = None, extra: str = "", **server):
        """(Re)write the configuration file (e.g. before a reload); settings
        given at construction are kept unless overridden here (None: left out)."""
        settings = {
            "hostname": "mx.example.test",
            "listen": ["127.0.0.1:0"],
            "local_domains": ["example.test"],
            "data_dir": str(self.data_dir),
            # The suite runs as root on CI machines; its servers listen on
            # loopback only. tests/e2e/test_privilege.py tests `user` instead.
            "allow_root": True,
        }
        settings.update(self.base)
        settings.update(server)
        if "[runtime]" not in extra:
            # Share compiled plugins across test servers (content-addressed).
            extra = f"[runtime]\ncache_dir = {json.dumps(str(CACHE_DIR))}\n" + extra
        if "[delivery]" not in extra:
            # Tests that look at the spool keep their messages queued; delivery
            # tests (test_delivery.py) configure [delivery] themselves.
            extra += "\n[delivery]\nenabled = false\n"
        self.config_path.write_text(render_config(settings, plugins or [], extra))

    def admin(self, command: str) -> subprocess.CompletedProcess:
        """Run `postern <command> --config <this server's config>`."""
        return subprocess.run(
            [str(BIN), command, "--config", str(self.config_path)],
            capture_output=True, text=True, timeout=120,
        )

    def rss_kib(self) -> int:
        assert self.proc
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    # -- process control -------------------------------------------------
    def start(self, timeout: float = 60.0, env: dict | None = None) -> "Server":
        """Start (or start again: ports are new) and wait for the first
        listener; `env` adds variables."""
        self.port = 0
        self.addresses = []
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(self.config_path), "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "RUST_LOG": os.environ.get("POSTERN_TEST_LOG", "info"), **(env or {})},
        )
        ready = threading.Event()
        threading.Thread(target=self._reader, args=(ready,), daemon=True).start()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready.wait(0.05):
                break
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"postern exited with {self.proc.returncode}:\n" + "\n".join(self.raw_log))
        else:
            raise RuntimeError("postern did not start listening:\n" + "\n".join(self.raw_log))
        # Wait until every configured listener is up.
        time.sleep(0.05)
        return self

    def _reader(self, ready: threading.Event):
        assert self.proc and self.proc.stderr
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.raw_log.append(line)
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.logs.append(rec)
            if rec.get("message") == "listening":
                self.addresses.append(rec["address"])
                if not self.port:
                    self.port = int(rec["address"].rsplit(":", 1)[1])
                ready.set()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- observation -------------------------------------------------------
    def log_records(self) -> list[dict]:
        """Every JSON log record so far (after the log settled)."""
        self.settle()
        return self._records()

    def _records(self) -> list[dict]:
        with self._lock:
            return list(self.logs)

    def wait_log(self, pred, timeout: float = 10.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for r in self._records():
                if pred(r):
                    return r
            time.sleep(0.02)
        raise AssertionError("log record not found; log:\n" + "\n".join(self.raw_log[-60:]))

    def settle(self, quiet: float = 0.05, limit: float = 3.0):
        """Wait until the log has been quiet for `quiet` seconds (the server
        writes its log in batches every few milliseconds)."""
        deadline = time.time() + limit
        seen = -1
        while time.time() < deadline:
            with self._lock:
                n = len(self.raw_log)
            if n == seen:
                return
            seen = n
            time.sleep(quiet)

    def probe_calls(self, tag: str | None = None, stage: str | None = None) -> list[dict]:
        """Records logged by the test probe plugin (`probe:` + JSON)."""
        self.settle()
        out = []
        for r in self.log_records():
            msg = r.get("message", "")
            if isinstance(msg, str) and msg.startswith("probe:"):
                rec = json.loads(msg[len("probe:"):])
                if (tag is None or rec["tag"] == tag) and (stage is None or rec["stage"] == stage):
                    out.append(rec)
        return out

    # -- spool ---------------------------------------------------------------
    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    def spool(self) -> "SpoolLog":
        """A snapshot of the spool's log (read directly, no lock: the server may be
        writing; a record still being appended at the end is not seen yet)."""
        return SpoolLog(self.spool_dir)

    def queued(self) -> list[str]:
        """Ids of queued messages, in queue-id (creation) order."""
        return self.spool().queued()

    def read_queued(self, qid: str) -> tuple[dict, bytes]:
        """(envelope, message bytes) of a queued message."""
        return self.spool().read(qid)


# -- the spool's log (format version 2, see host/spool/src/format.rs) ---------------
SEGMENT_MAGIC = b"PSTNLOG2"
SEGMENT_HEADER = struct.Struct("<8sIIQII")  # magic, version, header len, seq, 0, crc
RECORD_MAGIC = b"PREC"
RECORD_HEADER = struct.Struct("<4sB3sQ20sIQII")  # magic, kind, 0, lsn, id, env, payload, body crc, header crc
MESSAGE, STATE, TOMBSTONE = 1, 2, 3


class SpoolLog:
    """Reads every segment of a spool's log in order, verifying both checksums of
    every record, and resolves them the way the spool does: by LSN, a message is
    queued when its newest message record is newer than its newest tombstone; its
    state records are those newer than the message record. Reading stops at the
    first invalid record of a segment (the server may be appending to it)."""

    def __init__(self, spool_dir: Path):
        self.records: list[tuple[int, str, int, bytes, bytes]] = []  # (kind, id, lsn, envelope, payload)
        log = Path(spool_dir) / "log"
        names = sorted(p.name for p in log.iterdir() if p.name.endswith(".seg")) if log.is_dir() else []
        for name in names:
            try:
                data = (log / name).read_bytes()
            except FileNotFoundError:
                continue  # deleted meanwhile: nothing in it was live
            self.records.extend(self._scan(data, int(name[:-4], 16)))

    @staticmethod
    def _scan(data: bytes, seq: int):
        if len(data) < SEGMENT_HEADER.size:
            return
        magic, version, header_len, found, _, crc = SEGMENT_HEADER.unpack_from(data)
        if (magic, version, header_len, found) != (SEGMENT_MAGIC, 2, 32, seq) or zlib.crc32(data[:28]) != crc:
            raise AssertionError(f"bad header in segment {seq:016x}")
        pos = SEGMENT_HEADER.size
        while pos + RECORD_HEADER.size <= len(data):
            magic, kind, _, lsn, qid, env_len, payload_len, body_crc, header_crc = RECORD_HEADER.unpack_from(data, pos)
            if magic != RECORD_MAGIC or zlib.crc32(data[pos:pos + 52]) != header_crc:
                return
            start = pos + RECORD_HEADER.size
            end = start + env_len + payload_len
            if end > len(data) or zlib.crc32(data[start:end]) != body_crc:
                return
            yield kind, qid.decode(), lsn, data[start:start + env_len], data[start + env_len:end]
            pos = end

    def _newest(self, kind: int) -> dict[str, tuple[int, bytes, bytes]]:
        out = {}
        for k, qid, lsn, env, payload in self.records:
            if k == kind and (qid not in out or lsn >= out[qid][0]):
                out[qid] = (lsn, env, payload)
        return out

    def messages(self) -> dict[str, tuple[int, bytes, bytes]]:
        """Queued messages: id -> (lsn, envelope JSON, message bytes)."""
        tombs = self._newest(TOMBSTONE)
        return {q: m for q, m in self._newest(MESSAGE).items() if q not in tombs or tombs[q][0] < m[0]}

    def queued(self) -> list[str]:
        return sorted(self.messages())

    def read(self, qid: str) -> tuple[dict, bytes]:
        _, env, message = self.messages()[qid]
        envelope = json.loads(env)
        assert envelope["queue_id"] == qid, envelope
        return envelope, message

    def state(self, qid: str) -> bytes:
        """The delivery journal text of a queued message (its state records in order)."""
        lsn = self.messages()[qid][0]
        states = sorted({l: p for k, q, l, _, p in self.records if k == STATE and q == qid and l > lsn}.items())
        return b"".join(p for _, p in states)

    def count(self, kind: int | None = None) -> int:
        """Records in the log (of one kind)."""
        return sum(1 for r in self.records if kind is None or r[0] == kind)


# -- raw SMTP ----------------------------------------------------------------
REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")


class Raw:
    """A raw SMTP client: send exact bytes, read parsed replies."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes | str):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; pending: %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: (code, text with lines joined by \\n)."""
        lines = []
        while True:
            line = self._line()
            m = REPLY_LINE.match(line)
            assert m, f"malformed reply line {line!r}"
            lines.append(m.group(3).decode())
            if m.group(2) == b" ":
                return int(m.group(1)), "\n".join(lines)

    def cmd(self, line: str) -> tuple[int, str]:
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection without sending more."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return data == b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ehlo(port: int, name: str = "client.test") -> Raw:
    c = Raw(port)
    code, _ = c.reply()
    assert code == 220, code
    code, _ = c.cmd(f"EHLO {name}")
    assert code == 250, code
    return c


def ipv6_loopback() -> bool:
    """Whether this machine can listen on and connect to [::1]."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            s.listen(1)
            with socket.create_connection(("::1", s.getsockname()[1]), timeout=2):
                return True
    except OSError:
        return False


def message(subject: str = "test", body: str = "Hello.\r\n", extra: str = "") -> bytes:
    return (
        f"From: Sender <sender@client.test>\r\nTo: rcpt@example.test\r\nSubject: {subject}\r\n"
        f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <t-{time.time_ns()}@client.test>\r\n{extra}\r\n{body}"
    ).encode()


# -- DNS on loopback -----------------------------------------------------------
class DnsServer:
    """A small authoritative DNS server on 127.0.0.1 (UDP and TCP) for tests.

    `records` maps (name, type) to a list of values: A/AAAA addresses, MX as
    (preference, exchange), TXT strings, PTR names. Names under `servfail`
    answer SERVFAIL; queries for names in `silent` are dropped unanswered,
    like a dead or filtered name server; everything else not listed is
    NXDOMAIN, or NOERROR with no answers when the name exists with other types.
    `queries` records every query, dropped ones too."""

    def __init__(self, records: dict | None = None, servfail: tuple = (), silent: tuple = ()):
        from dnslib.server import BaseResolver, DNSLogger, DNSServer  # type: ignore

        self.records = {}
        for (name, rtype), values in (records or {}).items():
            self.add(name, rtype, values)
        self.servfail = {n.rstrip(".").lower() for n in servfail}
        self.silent = {n.rstrip(".").lower() for n in silent}
        self.queries: list[tuple[str, str]] = []
        outer = self

        class Resolver(BaseResolver):
            def resolve(self, request, handler):
                return outer._answer(request)

        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        # A free UDP port whose TCP twin may be taken (e.g. by a connection of a
        # test running in parallel): try again with another one.
        for attempt in range(50):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            sock.close()
            try:
                self.udp = DNSServer(Resolver(), port=self.port, address="127.0.0.1", logger=quiet)
            except OSError:
                continue
            try:
                self.tcp = DNSServer(Resolver(), port=self.port, address="127.0.0.1", tcp=True, logger=quiet)
                break
            except OSError:
                self.udp.server.server_close()
                if attempt == 49:
                    raise
        self.udp.start_thread()
        self.tcp.start_thread()

    def add(self, name: str, rtype: str, values):
        self.records.setdefault((name.rstrip(".").lower(), rtype.upper()), []).extend(values)

    def _answer(self, request):
        from dnslib import A, AAAA, MX, PTR, QTYPE, RCODE, RR, TXT  # type: ignore

        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append((qname, qtype))
        if qname in self.silent:
            from dnslib import DNSError  # type: ignore

            # dnslib's handler sends nothing when the resolver raises this.
            raise DNSError(f"silent: dropping the query for {qname}")
        if qname in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        values = self.records.get((qname, qtype))
        if values is None:
            if not any(n == qname for n, _ in self.records):
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for v in values:
            rdata = {
                "A": lambda v: A(v),
                "AAAA": lambda v: AAAA(v),
                "MX": lambda v: MX(v[1], v[0]),
                "TXT": lambda v: TXT(v),
                "PTR": lambda v: PTR(v),
            }[qtype](v)
            reply.add_answer(RR(request.q.qname, QTYPE.reverse[qtype], rdata=rdata, ttl=60))
        return reply

    def config(self, timeout: str = "2s") -> str:
        """A [dns] section using this server, with the resolver's `timeout`
        per attempt (the host tries twice)."""
        return f'[dns]\nnameservers = ["127.0.0.1:{self.port}"]\ntimeout = {json.dumps(timeout)}\n'

    def stop(self):
        self.udp.stop()
        self.tcp.stop()
