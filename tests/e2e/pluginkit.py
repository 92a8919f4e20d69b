"""Helpers shared by the shipped-plugin suites (tests/e2e/test_plugin_*.py):
components that must exist (a missing Python/JS component fails the test
with instructions, never skips it), plugin log lines, AUTH set-up, and short
SMTP transactions. Everything runs against the real binary and the real
built components."""

from __future__ import annotations

import base64
import functools
import re
import subprocess
import time

import pytest
from harness import BIN, Raw, plugin, wasm

# A listener that offers AUTH without TLS (tests only), and a generous
# per-client failure limit so one test's failures do not leak into the next
# connection's.
AUTH_LISTENER = (
    '[[listener]]\nname = "sub"\naddress = "127.0.0.1:0"\nallow_plaintext_auth = true\n'
    "[auth]\nclient_failure_limit = 1000\n"
)


def component(name: str, config: dict | None = None, **settings) -> dict:
    """A [[plugin]] entry for a shipped component; fails (never skips) when
    it has not been built."""
    try:
        wasm(name)
    except FileNotFoundError:
        pytest.fail(
            f"the {name} component is missing: build it with `make plugins` "
            f"(Rust plugins: target/wasm32-wasip2/release/, Python/JS: target/plugins/{name}.wasm)",
            pytrace=False,
        )
    return plugin(name, config=config, **settings)


@functools.lru_cache(maxsize=None)
def hash_password(password: str) -> str:
    """An argon2id PHC string from the host's `postern hash-password`."""
    r = subprocess.run([str(BIN), "hash-password"], input=password, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def auth_file(users: dict[str, str], name: str = "auth-file", **config) -> dict:
    """An auth-file entry; `users` maps names to clear-text passwords, hashed
    here with the host's command."""
    cfg = {"users": {u: hash_password(p) for u, p in users.items()}, **config}
    return {**component("auth-file", cfg, max_memory="64MiB", timeout_ms=5000), "name": name}


def plain(user: str, password: str, authzid: str = "") -> str:
    """The base64 AUTH PLAIN response (RFC 4616)."""
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def greet(port: int, name: str = "client.test") -> Raw:
    """Connect, read the 220 greeting, say EHLO."""
    c = Raw(port)
    code, text = c.reply()
    assert code == 220, (code, text)
    code, text = c.cmd(f"EHLO {name}")
    assert code == 250, (code, text)
    return c


def login(port: int, user: str, password: str) -> Raw:
    """A session authenticated with AUTH PLAIN."""
    c = greet(port)
    assert c.cmd(f"AUTH PLAIN {plain(user, password)}") == (235, "2.7.0 Authentication successful")
    return c


def reply(code: int, enhanced: str, text: str) -> tuple[int, str]:
    """A reply as Raw.reply() returns it."""
    return code, f"{enhanced} {text}" if enhanced else text


_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_fields(text: str) -> list[tuple[str, str]]:
    """The host renders a plugin's log fields as `k=v k2="quoted value"`."""
    out = []
    for k, v in _FIELD.findall(text or ""):
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out.append((k, v))
    return out


def plugin_logs(srv, plugin_name: str, message: str | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """(message, ordered fields) of every log line a plugin wrote."""
    out = []
    for r in srv.log_records():
        if r.get("plugin") == plugin_name and r.get("target") == "postern::plugin":
            if message is None or r.get("message") == message:
                out.append((r.get("message"), parse_fields(r.get("fields", ""))))
    return out


def wait_plugin_log(srv, plugin_name: str, message: str, timeout: float = 10.0, count: int = 1):
    """Wait until `plugin_name` logged `message` at least `count` times."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = plugin_logs(srv, plugin_name, message)
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"{plugin_name} did not log {message!r} x{count}; log:\n" + "\n".join(srv.raw_log[-40:]))
