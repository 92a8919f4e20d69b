"""The packaged unit's system-call filter (packaging/postern.service:
SystemCallFilter=@system-service, then ~@privileged @resources) lets every
call the server makes through: the real binary runs under strace through a
start (compiling a plugin), an SMTP session with STARTTLS and DATA, Maildir
delivery, `postern reload` and `status`, and SIGTERM, and every system call
it made must be in @system-service and in neither @privileged nor
@resources, as this machine's systemd-analyze lists them. (Started as the
unit starts it, the server switches no ids: that part is the unit's job.)

Skipped without strace or systemd-analyze."""

import json
import os
import re
import signal
import shutil
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from harness import BIN, Server, plugin

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "postern.service"

pytestmark = pytest.mark.skipif(not (shutil.which("strace") and shutil.which("systemd-analyze")),
                                reason="needs strace and systemd-analyze")


def syscall_set(group: str) -> set[str]:
    """The calls a systemd syscall group names, nested groups expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True, text=True,
                         check=True).stdout
    calls = set()
    for word in (line.split()[0] for line in out.splitlines()[1:] if line.startswith(" ") and line.split()):
        calls |= syscall_set(word) if word.startswith("@") else {word}
    return calls


def test_unit_filter_allows_every_call_the_server_makes(tmp_path):
    unit = UNIT.read_text()
    assert "SystemCallFilter=@system-service\n" in unit and "SystemCallFilter=~@privileged @resources\n" in unit
    tls = tmp_path / "tls"
    subprocess.run([str(BIN), "gen-cert", "--hostname", "mx.example.test", "--dir", str(tls)], check=True,
                   capture_output=True)
    srv = Server(tmp_path / "srv", plugins=[plugin("probe", "test-probe", config={"tag": "sc"})],
                 extra=f'[runtime]\n[tls]\ncert = "{tls}/cert.pem"\nkey = "{tls}/key.pem"\n'
                       "[delivery]\nenabled = true\n")
    trace, log = tmp_path / "trace", tmp_path / "log"
    with open(log, "wb") as lf:
        proc = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace), str(BIN), "serve", "--config",
                                 str(srv.config_path), "--log-format", "json"], stdout=subprocess.DEVNULL, stderr=lf)
    try:
        port, deadline = None, time.time() + 300
        while port is None and time.time() < deadline and proc.poll() is None:
            for line in log.read_text(errors="replace").splitlines():
                if '"listening"' in line:
                    port = int(json.loads(line)["address"].rsplit(":", 1)[1])
            time.sleep(0.2)
        assert port, log.read_text()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            s.starttls(context=ctx)
            s.sendmail("sender@client.test", ["someone@example.test"], b"Subject: sc\r\n\r\nhello\r\n")
        new = srv.data_dir / "mail" / "example.test" / "someone" / "new"
        while time.time() < deadline and not (new.is_dir() and any(new.iterdir())):
            time.sleep(0.2)
        assert new.is_dir() and any(new.iterdir())
        for command in ("reload", "status"):
            r = srv.admin(command)
            assert r.returncode == 0, r.stdout + r.stderr
    finally:
        # SIGTERM to the server (strace's child), not to strace, which would
        # detach and leave the server running; strace exits with its status.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        for pid in children.read_text().split() if children.exists() else []:
            os.kill(int(pid), signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    made = set(re.findall(r"^\d+ +([a-z0-9_]+)\(", trace.read_text(errors="replace"), re.M))
    assert {"accept4", "fdatasync", "execve"} <= made, sorted(made)
    allowed = syscall_set("@system-service")
    assert not made - allowed, f"outside @system-service: {sorted(made - allowed)}"
    for group in ("@privileged", "@resources"):
        assert not made & syscall_set(group), f"in {group}: {sorted(made & syscall_set(group))}"
