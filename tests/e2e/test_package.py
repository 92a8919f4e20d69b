"""The Debian package, installed on this machine as an operator would: `make
deb-package` (cargo-deb from the existing release build, nothing rebuilt)
then `dpkg -i`. The postern system account, /var/lib/postern (0750
postern:postern), /etc/postern/postern.toml (a conffile, root:postern 0640,
its plugins in /usr/lib/postern/plugins) and a placeholder certificate are
there; `postern check` passes on the installed file as is; the server,
started the way the packaged unit starts it (as postern, with
CAP_NET_BIND_SERVICE only, no new privileges), tells the service manager it
is ready, answers SMTP on a test port, `postern status` and `reload` from
root and from postern; the unit passes `systemd-analyze verify`. Then
`dpkg --purge postern` removes it all.

Needs root and dpkg (skipped otherwise); refuses to touch a postern package
already installed here. One test: the steps share one installation."""

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import pytest
from harness import ROOT

UNIT = Path("/usr/lib/systemd/system/postern.service")
CONFIG = Path("/etc/postern/postern.toml")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="installing a package needs root; this run is not root"),
    pytest.mark.skipif(shutil.which("dpkg") is None, reason="no dpkg on this machine"),
]


def run(*args, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, **kw)


def installed() -> bool:
    r = run("dpkg-query", "-W", "-f=${Status}", "postern")
    return r.returncode == 0 and "installed" in r.stdout.split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def package():
    if installed():
        pytest.skip("a postern package is already installed on this machine: not touching it")
    r = run("make", "-C", ROOT, "deb-package", "DEB_FLAGS=--fast", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    debs = sorted((ROOT / "target" / "debian").glob("postern_*.deb"), key=lambda p: p.stat().st_mtime)
    assert debs, r.stdout
    r = run("dpkg", "-i", debs[-1])
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        yield debs[-1]
    finally:
        purged = run("dpkg", "--purge", "postern")
        assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not installed()
    assert not Path("/usr/bin/postern").exists() and not CONFIG.parent.exists() and not UNIT.exists()
    assert not Path("/var/lib/postern").exists(), "nothing but an empty spool and cache was there"


def test_package_installs_checks_and_serves(package):
    account = pwd.getpwnam("postern")
    assert account.pw_uid < 1000 and account.pw_shell.endswith("nologin"), account
    state = os.stat("/var/lib/postern")
    assert (state.st_uid, state.st_gid, stat.S_IMODE(state.st_mode)) == (account.pw_uid, account.pw_gid, 0o750)
    conf = os.stat(CONFIG)
    assert (conf.st_uid, conf.st_gid, stat.S_IMODE(conf.st_mode)) == (0, account.pw_gid, 0o640)
    assert str(CONFIG) in run("dpkg-query", "-W", "-f=${Conffiles}", "postern").stdout
    cfg = tomllib.loads(CONFIG.read_text())
    assert cfg["server"]["user"] == "postern" and cfg["server"]["data_dir"] == "/var/lib/postern"
    for p in cfg["plugin"]:
        assert p["path"].startswith("/usr/lib/postern/plugins/") and Path(p["path"]).is_file(), p
    key = os.stat(cfg["tls"]["key"])
    assert (key.st_gid, stat.S_IMODE(key.st_mode)) == (account.pw_gid, 0o640)
    # The mail-auth plugin's read-only files grant (production.toml) exists.
    dkim = os.stat("/etc/postern/dkim")
    assert (dkim.st_uid, dkim.st_gid, stat.S_IMODE(dkim.st_mode)) == (0, account.pw_gid, 0o750)
    assert UNIT.is_file()
    if shutil.which("systemd-analyze"):
        r = run("systemd-analyze", "verify", UNIT)
        assert r.returncode == 0, r.stdout + r.stderr

    # As installed, with no edit: every plugin compiles and accepts its
    # configuration (as postern: the cache it writes is postern's).
    r = run("postern", "check", "--config", CONFIG, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("  plugin ") == len(cfg["plugin"]), r.stdout
    assert all(p.stat().st_uid == account.pw_uid for p in Path("/var/lib/postern").rglob("*"))

    # Started as the unit starts it.
    port = free_port()
    notify_dir = Path(tempfile.mkdtemp(prefix="postern-pkg-", dir="/tmp"))
    notify_dir.chmod(0o755)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_dir / "notify"))
    (notify_dir / "notify").chmod(0o777)
    notify.settimeout(120)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        ["setpriv", "--reuid=postern", "--regid=postern", "--init-groups",
         "--inh-caps=-all,+net_bind_service", "--ambient-caps=+net_bind_service",
         "--bounding-set=-all,+net_bind_service", "--no-new-privs",
         "/usr/bin/postern", "serve", "--config", str(CONFIG), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=log,
        env={"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": str(notify_dir / "notify")},
    )
    try:
        try:
            ready = notify.recv(4096).decode()
        except TimeoutError:
            raise AssertionError("no READY=1 within 120 s") from None
        assert "READY=1" in ready.split("\n"), ready
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Uid:\t{account.pw_uid}\t{account.pw_uid}\t{account.pw_uid}" in status, status
        assert "CapEff:\t0000000000000400" in status, status  # CAP_NET_BIND_SERVICE alone
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            greeting = c.recv(512)
            assert greeting.startswith(b"220 ") and b"ESMTP Postern" in greeting, greeting
            c.sendall(b"QUIT\r\n")
        r = run("postern", "status", "--config", CONFIG)
        assert r.returncode == 0 and "generation 1" in r.stdout, r.stdout + r.stderr
        r = run("runuser", "-u", "postern", "--", "postern", "status", "--config", CONFIG)
        assert r.returncode == 0 and f"127.0.0.1:{port}" in r.stdout, r.stdout + r.stderr
        # What the unit's ExecReload runs (as postern).
        r = run("runuser", "-u", "postern", "--", "postern", "reload", "--config", CONFIG)
        assert r.returncode == 0 and "reloaded: generation 2" in r.stdout, r.stdout + r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        notify.close()
        shutil.rmtree(notify_dir, ignore_errors=True)
        log.seek(0)
        output = log.read().decode(errors="replace")
    assert code == 0, output
    deadline = time.time() + 5
    while Path("/var/lib/postern/postern.sock").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not Path("/var/lib/postern/postern.sock").exists()
