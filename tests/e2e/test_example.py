"""The reference configuration (examples/postern.toml, what `make run`
serves) with its default plugin chain, started as the README starts it but
on an ephemeral port and a temporary data directory: local mail is
accepted, relaying is refused (also through every common open-relay trick),
the submission listener wants STARTTLS and AUTH, and the example user may
relay once authenticated."""

import json
import os
import signal
import smtplib
import ssl
import subprocess
import threading
import time

import pytest
from harness import BIN, ROOT, Raw
from pluginkit import plain, reply

EXAMPLE = ROOT / "examples" / "postern.toml"
SUBMISSION = 'address = "127.0.0.1:5870"'  # the example's [[listener]] (not replaced by --listen)


class Example:
    def __init__(self, data_dir):
        self.records = []
        self.lock = threading.Lock()
        self.listening = {}
        # The example as shipped, but its fixed submission port made ephemeral:
        # a copy beside it, so its relative paths still resolve.
        text = EXAMPLE.read_text()
        assert SUBMISSION in text, "the example's submission listener moved"
        self.config = EXAMPLE.with_name(f".postern-test-{os.getpid()}.toml")
        self.config.write_text(text.replace(SUBMISSION, 'address = "127.0.0.1:0"'))
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


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    subprocess.run([str(BIN), "gen-cert", "--hostname", "mx.example.test", "--dir", "examples/data/tls"],
                   cwd=ROOT, check=True, capture_output=True)
    ex = Example(tmp_path_factory.mktemp("example"))
    deadline = time.time() + 180  # a fresh data dir compiles every component
    while not ex.ready.wait(0.1):
        if ex.proc.poll() is not None or time.time() > deadline:
            ex.stop()
            pytest.fail("the example configuration did not start:\n" + ex.log(), pytrace=False)
    yield ex
    ex.stop()


def session(port, name="client.example"):
    c = Raw(port, timeout=30)
    code, text = c.reply()
    assert code == 220 and text.startswith("mx.example.test"), (code, text)
    assert c.cmd(f"EHLO {name}")[0] == 250
    return c


def test_the_chain_is_loaded(example):
    loaded = [r["plugin"] for r in example.records if r.get("message") == "plugin loaded"]
    assert loaded == ["access-log", "ip-access", "message-limits", "envelope-check", "relay-control", "vrfy-expn",
                      "attachment-scan", "auth-file"]


def test_local_delivery_is_accepted(example):
    with smtplib.SMTP("127.0.0.1", example.listening["smtp"], timeout=30) as s:
        s.ehlo("client.example")
        s.mail("me@client.example")
        assert s.rcpt("someone@example.test")[0] == 250
        code, text = s.data(b"Subject: hi\r\nFrom: me@client.example\r\n\r\nHello.\r\n")
        assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), (code, text)


def test_relay_is_refused(example):
    c = session(example.listening["smtp"])
    assert c.cmd("MAIL FROM:<me@client.example>")[0] == 250
    assert c.cmd("RCPT TO:<someone@elsewhere.example>") == \
        reply(554, "5.7.1", "someone@elsewhere.example: Relay access denied")


PROBES = [
    "someone@elsewhere.example",
    "someone@ELSEWHERE.EXAMPLE.",
    "someone%elsewhere.example@example.test",
    "someone%elsewhere.example@EXAMPLE.TEST.",
    '"someone@elsewhere.example"@example.test',
    '"someone%elsewhere.example"@example.test',
    "elsewhere.example!someone@example.test",
    "someone@[192.0.2.1]",
    "someone@[127.0.0.1]",
    "someone@[IPv6:::1]",
    "@example.test:someone@elsewhere.example",
    "@example.test,@mx.example.test:someone%elsewhere.example@example.test",
]


@pytest.mark.parametrize("address", PROBES)
def test_open_relay_probes_are_refused(example, address):
    c = session(example.listening["smtp"])
    assert c.cmd("MAIL FROM:<probe@client.example>")[0] == 250
    code, text = c.cmd(f"RCPT TO:<{address}>")
    assert (code, text.split(" ", 1)[0]) == (554, "5.7.1"), (address, code, text)
    assert text.endswith("Relay access denied")


def test_eicar_is_refused(example):
    eicar = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    with smtplib.SMTP("127.0.0.1", example.listening["smtp"], timeout=30) as s:
        s.ehlo("client.example")
        s.mail("me@client.example")
        s.rcpt("someone@example.test")
        code, text = s.data(f"Subject: test\r\n\r\n{eicar}\r\n".encode())
        assert (code, text) == (554, b"5.7.0 Message rejected: virus EICAR-Test-File found")


def test_submission_needs_tls_and_auth_then_relays(example):
    port = example.listening["submission"]
    c = session(port)
    assert c.cmd("MAIL FROM:<alice@example.test>")[0] == 530
    assert c.cmd(f"AUTH PLAIN {plain('alice', 'example-password')}")[0] == 538
    c.close()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.example")
        s.starttls(context=ctx)
        s.ehlo("client.example")
        assert "PLAIN" in s.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("alice", "wrong-password")
        assert s.login("alice", "example-password")[0] == 235
        assert s.mail("alice@example.test")[0] == 250
        assert s.rcpt("someone@elsewhere.example")[0] == 250
        s.rset()
