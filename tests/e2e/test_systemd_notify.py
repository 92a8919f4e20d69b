"""systemd Type=notify: the real binary, given a NOTIFY_SOCKET as systemd
gives one, says READY=1 once it accepts mail, RELOADING=1 with
MONOTONIC_USEC (systemd >= 253 ignores RELOADING=1 without it) then READY=1
around every reload — a refused one too, since the old generation keeps
serving — and STOPPING=1 when SIGTERM starts the shutdown."""

import socket
import time

from harness import Raw, Server


class NotifySocket:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(30)

    def next(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")


def test_ready_reloading_stopping(tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    srv = Server(tmp_path / "srv")
    srv.start(env={"NOTIFY_SOCKET": str(notify.path)})
    try:
        ready = notify.next()
        assert "READY=1" in ready and any(s.startswith("STATUS=serving generation 1") for s in ready), ready
        # READY comes when mail is accepted.
        with Raw(srv.port) as c:
            assert c.reply()[0] == 220

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        r = srv.admin("reload")
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert r.returncode == 0, r.stderr
        reloading = notify.next()
        assert "RELOADING=1" in reloading, reloading
        usec = [int(s.split("=", 1)[1]) for s in reloading if s.startswith("MONOTONIC_USEC=")]
        assert len(usec) == 1 and before <= usec[0] <= after, (before, usec, after)
        done = notify.next()
        assert "READY=1" in done and "STATUS=serving generation 2" in done, done

        srv.config_path.write_text(srv.config_path.read_text() + "\nbogus = 1\n")
        r = srv.admin("reload")
        assert r.returncode != 0
        assert "RELOADING=1" in notify.next()
        refused = notify.next()
        assert "READY=1" in refused and any("reload refused" in s for s in refused), refused
    finally:
        code = srv.stop()
    assert code == 0
    assert "STOPPING=1" in notify.next()
