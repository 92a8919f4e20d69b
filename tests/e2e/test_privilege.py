"""Least privilege: the real binary started as root with `[server] user`
binds, then switches for good — every thread's real, effective and saved
uid and gid are the account's (/proc), no capability is left — and still
accepts, runs its plugins, delivers to a Maildir it owns, answers `postern
status` and `postern reload` from root and from the account, and tells a
service manager (NOTIFY_SOCKET) it is ready. Started as root without `user`
or `allow_root` it refuses to start; an unknown account is a configuration
error at its line; a data dir the account does not own is refused by name.

Needs root (skipped otherwise). Uses a dedicated system account,
`postern-e2e`, created with useradd when missing and left in place (the
suite runs tests in parallel; another worker may be using it)."""

import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from harness import BIN, Server, message, plugin

ACCOUNT = "postern-e2e"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root; this run is not root")


@pytest.fixture(scope="module")
def account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(ACCOUNT)
    except KeyError:
        pass
    if not shutil.which("useradd"):
        pytest.skip("useradd is missing (Debian package passwd)")
    for _ in range(5):  # /etc/passwd may be locked a moment (the package test's adduser)
        r = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                            "--shell", "/usr/sbin/nologin", ACCOUNT], capture_output=True, text=True)
        try:
            return pwd.getpwnam(ACCOUNT)
        except KeyError:
            time.sleep(1)
    raise AssertionError(f"cannot create {ACCOUNT}: {r.stderr}")


@pytest.fixture
def base():
    """A directory the account can reach (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="postern-priv-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ids(status: str, key: str) -> list[int]:
    line = next(l for l in status.splitlines() if l.startswith(key + ":"))
    return [int(x) for x in line.split()[1:]]


def as_account(acct, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", acct.pw_name, "--", str(BIN), *args],
                          capture_output=True, text=True, timeout=120)


class NotifySocket:
    """A service manager's notification socket (what systemd binds), open to
    every user like systemd's own."""

    def __init__(self, directory: Path):
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.path.chmod(0o777)
        self.sock.settimeout(30)

    def next(self) -> set[str]:
        return set(self.sock.recv(4096).decode().split())


def test_switches_user_and_still_serves(account, base):
    notify = NotifySocket(base)
    srv = Server(base / "srv", plugins=[plugin("probe", "test-probe", config={"tag": "priv"})],
                 # [runtime]: the account's own plugin cache in its data dir
                 # (the suite's shared cache belongs to root).
                 extra="[runtime]\n[delivery]\nenabled = true\n", user=ACCOUNT, allow_root=None)
    srv.tmp.chmod(0o755)
    srv.start(env={"NOTIFY_SOCKET": str(notify.path)})
    try:
        assert "READY=1" in notify.next()
        uid, gid = account.pw_uid, account.pw_gid
        status = Path(f"/proc/{srv.proc.pid}/status").read_text()
        assert ids(status, "Uid") == [uid] * 4, status  # real, effective, saved, filesystem
        assert ids(status, "Gid") == [gid] * 4, status
        assert 0 not in ids(status, "Groups")
        assert "NoNewPrivs:\t1" in status
        tasks = list(Path(f"/proc/{srv.proc.pid}/task").iterdir())
        assert len(tasks) > 1
        for task in tasks:
            st = (task / "status").read_text()
            assert ids(st, "Uid") == [uid] * 4 and ids(st, "Gid") == [gid] * 4, (task, st)
            for cap in ("CapPrm", "CapEff", "CapAmb"):
                assert int(next(l for l in st.splitlines() if l.startswith(cap)).split()[1], 16) == 0, st
        switched = srv.wait_log(lambda r: r.get("message") == "switched to the unprivileged account")
        assert switched["user"] == ACCOUNT and switched["uid"] == uid

        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
            s.sendmail("sender@client.test", ["someone@example.test"], message(subject="as the account"))
        new = srv.data_dir / "mail" / "example.test" / "someone" / "new"
        deadline = time.time() + 30
        while time.time() < deadline and not (new.is_dir() and any(new.iterdir())):
            time.sleep(0.1)
        delivered = list(new.iterdir())
        assert len(delivered) == 1 and b"Subject: as the account" in delivered[0].read_bytes()
        assert delivered[0].stat().st_uid == uid
        assert srv.probe_calls(tag="priv", stage="rcpt-to"), "the plugin ran after the switch"
        for p in [srv.data_dir, *srv.data_dir.rglob("*")]:
            assert p.lstat().st_uid == uid, f"{p} is not the account's"

        r = srv.admin("status")
        assert r.returncode == 0 and "generation 1" in r.stdout, r.stdout + r.stderr
        r = as_account(account, "status", "--config", str(srv.config_path))
        assert r.returncode == 0 and "generation 1" in r.stdout, r.stdout + r.stderr
        # The account reads the configuration and the plugins again.
        r = as_account(account, "reload", "--config", str(srv.config_path))
        assert r.returncode == 0 and "reloaded: generation 2" in r.stdout, r.stdout + r.stderr
        reloading = notify.next()
        assert "RELOADING=1" in reloading and any(s.startswith("MONOTONIC_USEC=") for s in reloading), reloading
        assert "READY=1" in notify.next()
        r = srv.admin("reload")
        assert r.returncode == 0 and "reloaded: generation 3" in r.stdout, r.stdout + r.stderr
        # Changing the account needs a restart.
        srv.write_config(plugins=[plugin("probe", "test-probe", config={"tag": "priv"})],
                         extra="[runtime]\n[delivery]\nenabled = true\n", user="nobody")
        r = srv.admin("reload")
        assert r.returncode == 0 and "not applied until restart: server.user / server.group" in r.stdout, r.stdout
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
            assert s.noop()[0] == 250
        assert ids(Path(f"/proc/{srv.proc.pid}/status").read_text(), "Uid") == [uid] * 4
    finally:
        code = srv.stop()
    assert code == 0, "\n".join(srv.raw_log[-30:])
    seen = set()
    notify.sock.settimeout(5)
    while "STOPPING=1" not in seen:
        seen |= notify.next()


def test_check_and_offline_queue_as_root_write_as_the_account(account, base):
    """`postern check` and, with no server running, `postern queue flush|delete`
    write in the data dir (the compiled-plugin cache; the spool's log); run
    as root with `user` set they switch first, so all of it stays the
    account's and the server can use it afterwards."""
    probe = [plugin("probe", "test-probe", config={"tag": "tools"})]
    srv = Server(base / "srv", plugins=probe, extra="[runtime]\n", user=ACCOUNT, allow_root=None)
    srv.tmp.chmod(0o755)
    r = subprocess.run([str(BIN), "check", "--config", str(srv.config_path)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    cache = srv.data_dir / "cache"
    assert any(cache.iterdir()), "check cached the compiled plugin"
    for p in [srv.data_dir, *srv.data_dir.rglob("*")]:
        assert p.lstat().st_uid == account.pw_uid, f"{p} is not the account's"
    srv.start()
    assert srv.wait_log(lambda r: r.get("message") == "plugin loaded")["compiled"] is False, "the cache was usable"
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
        s.sendmail("sender@client.test", ["someone@example.test"], message())
    assert srv.stop() == 0
    [qid] = srv.queued()
    for args in (["flush"], ["delete", qid]):
        r = subprocess.run([str(BIN), "queue", *args, "--config", str(srv.config_path)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "no server running" in r.stdout, r.stdout + r.stderr
    assert srv.queued() == []
    for p in [srv.data_dir, *srv.data_dir.rglob("*")]:
        assert p.lstat().st_uid == account.pw_uid, f"{p} is not the account's"


def test_root_without_user_refuses_to_start(base):
    srv = Server(base, allow_root=None)
    r = subprocess.run([str(BIN), "serve", "--config", str(srv.config_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith(f"postern: {srv.config_path}: refusing to serve as root: set [server] user"), r.stderr
    assert "allow_root = true" in r.stderr
    assert not srv.data_dir.exists(), "nothing is created before the refusal"
    # allow_root = true: it starts (what the rest of the suite relies on).
    srv.write_config(allow_root=True)
    srv.start()
    srv.wait_log(lambda r: r.get("message", "").startswith("serving as root"))
    assert srv.stop() == 0


def test_unknown_user_or_group_is_a_config_error_at_its_line(base):
    srv = Server(base, user="no-such-user-e2e", allow_root=None)
    text = srv.config_path.read_text().splitlines()
    line = text.index('user = "no-such-user-e2e"') + 1
    for command in ("serve", "check"):
        r = subprocess.run([str(BIN), command, "--config", str(srv.config_path)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith(f"postern: {srv.config_path}:{line}: server.user: "
                                   f'there is no user "no-such-user-e2e" on this system'), r.stderr
    srv.write_config(user="nobody", group="no-such-group-e2e")
    line = srv.config_path.read_text().splitlines().index('group = "no-such-group-e2e"') + 1
    r = subprocess.run([str(BIN), "serve", "--config", str(srv.config_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"{srv.config_path}:{line}: server.group: there is no group" in r.stderr, r.stderr


def test_spool_the_account_does_not_own_is_refused_by_name(account, base):
    srv = Server(base, extra="[runtime]\n", user=ACCOUNT, allow_root=None)
    spool = srv.data_dir / "spool"
    spool.mkdir(parents=True)
    stray = spool / "lock"
    stray.write_bytes(b"")  # left by an earlier run as root
    for p in (srv.data_dir, spool):
        os.chown(p, account.pw_uid, account.pw_gid)
    r = subprocess.run([str(BIN), "serve", "--config", str(srv.config_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"spool {stray}: owned by uid 0, but postern switches to user {ACCOUNT}" in r.stderr, r.stderr
    assert f"chown -R {ACCOUNT}:{ACCOUNT} {spool}" in r.stderr, r.stderr
    assert stray.stat().st_uid == 0, "postern never takes over what it did not create"
