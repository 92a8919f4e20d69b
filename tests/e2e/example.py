"""The reference configuration (examples/postern.toml, what `make run`
serves) started as the README starts it, for the tests that exercise it as
shipped: its fixed submission port made ephemeral, a user of the test's own
added to auth-file (the example ships none), on an ephemeral SMTP port and a
temporary data directory. A copy is written beside the example, so its
relative plugin paths still resolve."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from harness import BIN, ROOT
from pluginkit import hash_password

EXAMPLE = ROOT / "examples" / "postern.toml"
SUBMISSION = 'address = "127.0.0.1:5870"'  # the example's [[listener]] (not replaced by --listen)
USERS = "[plugin.config.users]\n"  # auth-file's accounts: the test adds its own user
USER, PASSWORD = "tester", secrets.token_urlsafe(16)


class Example:
    """The example, running. `server`: lines of TOML added to its [server]
    section; `edits`: further (old, new) replacements, each of text that
    occurs exactly once in the example."""

    def __init__(self, data_dir: Path, server: str = "", edits: tuple[tuple[str, str], ...] = ()):
        self.records = []
        self.lock = threading.Lock()
        self.listening = {}
        self.data_dir = data_dir
        text = EXAMPLE.read_text()
        assert SUBMISSION in text, "the example's submission listener moved"
        assert text.count(USERS) == 1, "the example's auth-file users table moved"
        text = text.replace(SUBMISSION, 'address = "127.0.0.1:0"')
        text = text.replace(USERS, f"{USERS}{USER} = {json.dumps(hash_password(PASSWORD))}\n")
        for old, new in edits:
            assert text.count(old) == 1, f"the example changed: {old!r}"
            text = text.replace(old, new)
        text = text.replace("[server]\n", f"[server]\n{server}", 1)
        self.config = EXAMPLE.with_name(f".postern-test-{os.getpid()}-{id(self):x}.toml")
        self.config.write_text(text)
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(self.config), "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
             "--log-format", "json"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "RUST_LOG": "info"},
        )
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                rec = json.loads(line)
            except ValueError:
                rec = {"message": line}
            with self.lock:
                self.records.append(rec)
            if rec.get("message") == "listening":
                self.listening[rec["listener"]] = int(rec["address"].rsplit(":", 1)[1])
                if {"smtp", "submission"} <= self.listening.keys():
                    self.ready.set()

    def log(self):
        with self.lock:
            return "\n".join(json.dumps(r) for r in self.records[-40:])

    def stop(self):
        self.config.unlink(missing_ok=True)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_example(data_dir: Path, server: str = "", edits: tuple[tuple[str, str], ...] = ()):
    """The body of a fixture: the example started (its certificate made if
    missing, as `make run` does), yielded, stopped."""
    subprocess.run([str(BIN), "gen-cert", "--hostname", "mx.example.test", "--dir", "examples/data/tls"],
                   cwd=ROOT, check=True, capture_output=True)
    ex = Example(data_dir, server, edits)
    deadline = time.time() + 180  # a fresh data dir compiles every component
    while not ex.ready.wait(0.1):
        if ex.proc.poll() is not None or time.time() > deadline:
            ex.stop()
            pytest.fail("the example configuration did not start:\n" + ex.log(), pytrace=False)
    yield ex
    ex.stop()
