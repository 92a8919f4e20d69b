#!/usr/bin/env python3
"""Recipient enumeration probe: how fast does a client learn which local
mailboxes exist by asking RCPT TO for unknown names?

Starts Postern with bench/postern-default.toml (the example's default chain)
plus envelope-check `mailboxes` (the example's three: postmaster, someone,
alice), in a temporary directory on a free loopback port, then:

  1. sessions of EHLO, MAIL FROM and RCPT TO of unknown names, each RCPT
     sent after the previous reply (as nmap's smtp-enum-users does), one
     session after another, until --probes names were asked or a session
     is refused at its first RCPT;
  2. a session from another loopback address (127.0.0.2): whether a known
     mailbox still gets through.

and prints how many refusals were answered, how fast, and what ended the
session. `--set key=value` adds `[server]` settings (e.g. `--set
max_unknown_recipients=0 --set client_unknown_recipient_limit=0` shows the
server without the limits). Standard library only; run after `cargo build
--release -p postern` and `make plugins`.

    python3 bench/enumeration.py                 # the defaults
    python3 bench/enumeration.py --probes 1000 --set max_unknown_recipients=0 \
        --set client_unknown_recipient_limit=0   # the limits off
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
POSTERN = Path(os.environ.get("POSTERN_BIN", TARGET_DIR / "release" / "postern"))
MAILBOXES = ["postmaster@bench.test", "someone@bench.test", "alice@bench.test"]


def config(base: Path, settings: list[str]) -> Path:
    text = (BENCH / "postern-default.toml").read_text()
    text = re.sub(r'= "\.\./', f'= "{ROOT}/', text)
    # envelope-check gets the example's mailboxes (bench.test instead of example.test).
    text, n = re.subn(
        r'(name = "envelope-check"\n(?:.*\n)*?\[plugin\.config\]\n)',
        lambda m: m.group(1) + f"mailboxes = {json.dumps(MAILBOXES)}\n",
        text,
        count=1,
    )
    if n != 1:
        sys.exit("bench/postern-default.toml: envelope-check's [plugin.config] not found")
    extra = "".join(f"{s.split('=', 1)[0].strip()} = {s.split('=', 1)[1].strip()}\n" for s in settings)
    text = text.replace("[server]\n", "[server]\n" + extra, 1)
    out = base / "postern.toml"
    out.write_text(text)
    return out


class Client:
    def __init__(self, port: int, source: str = "127.0.0.1"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
        self.file = self.sock.makefile("rb")

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return 0, "connection closed"
            lines.append(line.decode().rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(lines[-1][:3]), lines[-1][4:]

    def cmd(self, line: str) -> tuple[int, str]:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def start(self) -> None:
        assert self.reply()[0] == 220
        assert self.cmd("EHLO client.bench")[0] == 250
        assert self.cmd("MAIL FROM:<probe@client.bench>")[0] == 250


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", type=int, default=1000, help="unknown names to ask for (default 1000)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a [server] setting")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="postern-enum-") as tmp:
        base = Path(tmp)
        cfg = config(base, args.set)
        log = open(base / "postern.log", "wb+")
        proc = subprocess.Popen(
            [str(POSTERN), "serve", "--config", str(cfg), "--data-dir", str(base / "data"), "--log-format", "json"],
            stdout=log, stderr=subprocess.STDOUT, env={k: v for k, v in os.environ.items() if k != "RUST_LOG"},
        )
        try:
            port = 0
            deadline = time.monotonic() + 300
            while not port:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("postern did not start:\n" + (base / "postern.log").read_text())
                for line in (base / "postern.log").read_text(errors="replace").splitlines():
                    if '"listening"' in line and '"smtp"' in line:
                        port = int(json.loads(line)["address"].rsplit(":", 1)[1])
                time.sleep(0.1)

            # Probe like nmap's smtp-enum-users (one RCPT at a time), in one
            # session after another, until the server stops answering.
            t0 = time.monotonic()
            sessions, answers, ends = 0, [], []
            while len(answers) < args.probes:
                c = Client(port)
                c.start()
                sessions += 1
                first = True
                while len(answers) < args.probes:
                    t = time.monotonic()
                    code, text = c.cmd(f"RCPT TO:<nobody{len(answers):05d}@bench.test>")
                    if code in (0, 421):
                        ends.append((first, f"{code} {text}"))
                        break
                    answers.append((code, time.monotonic() - t))
                    first = False
                else:
                    ends.append((False, "all answered"))
                if ends[-1][0]:
                    break
            total = time.monotonic() - t0
            refused = [d for code, d in answers if 500 <= code < 600]
            print(f"{len(refused)} of {args.probes} unknown names answered 5xx, in {total:.2f} s over {sessions} sessions")
            if refused:
                print(f"  answer time: fastest {min(refused) * 1000:.1f} ms, slowest {max(refused) * 1000:.1f} ms")
            print("  answers in order:", " ".join(f"{code}:{d * 1000:.0f}ms" for code, d in answers[:10]),
                  "..." if len(answers) > 10 else "")
            print(f"  each session ended with: {sorted(set(e for _, e in ends))}")
            if ends[-1][0]:
                print(f"  the last session got at its first RCPT: {ends[-1][1]}")

            try:
                c = Client(port, "127.0.0.2")
            except OSError as e:
                print(f"127.0.0.2: cannot bind ({e})")
            else:
                c.start()
                code, text = c.cmd("RCPT TO:<someone@bench.test>")
                print(f"another client (127.0.0.2), a known mailbox: {code} {text}")
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
