"""Slow clients cannot stretch the time-outs (slowloris): a command line
must arrive whole within command_timeout of the server waiting for it, and
DATA must end within data_timeout of its start unless it keeps up
min_data_rate (each chunk moves the deadline on by its size at that rate).
A byte a second does not restart the clock."""

import threading
import time

from harness import Raw, ehlo


def trickle(c: Raw, data: bytes, interval: float, stop: threading.Event) -> None:
    """Send `data` one byte per `interval` until it is sent or `stop` is set
    (the server closing the connection ends it too)."""
    for b in data:
        if stop.wait(interval):
            return
        try:
            c.send(bytes([b]))
        except OSError:
            return


def cut_off_while_trickling(c: Raw, data: bytes, interval: float, low: float, high: float) -> None:
    """Trickle `data` and expect `421 4.4.2` and a close between `low` and
    `high` seconds from the start."""
    stop = threading.Event()
    t0 = time.monotonic()
    sender = threading.Thread(target=trickle, args=(c, data, interval, stop))
    sender.start()
    try:
        c.sock.settimeout(high + 5)
        code, text = c.reply()
        took = time.monotonic() - t0
        assert code == 421 and text.startswith("4.4.2"), (code, text)
        assert low <= took <= high, f"cut off after {took:.1f}s, expected {low}-{high}s"
        assert c.closed()
    finally:
        stop.set()
        sender.join()


def in_data(port: int) -> Raw:
    """A session that has just been answered 354 to DATA."""
    c = ehlo(port)
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd("RCPT TO:<b@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    return c


def test_a_command_sent_a_byte_a_second_is_cut_off(start):
    srv = start(command_timeout="3s")
    c = Raw(srv.port)
    assert c.reply()[0] == 220
    cut_off_while_trickling(c, b"EHLO a-very-slow-client.example\r\n", 1.0, 2.5, 5.0)


def test_commands_at_a_normal_pace_are_not_cut_off(start):
    """The deadline is per command: a session longer than command_timeout
    whose commands each arrive in time goes on."""
    srv = start(command_timeout="2s")
    c = ehlo(srv.port)
    for _ in range(4):
        time.sleep(1.0)
        assert c.cmd("NOOP")[0] == 250


def test_data_trickled_a_byte_a_second_is_cut_off(start):
    srv = start(command_timeout="30s", data_timeout="3s")
    c = in_data(srv.port)
    cut_off_while_trickling(c, b"Subject: slow\r\n\r\n" + b"x" * 200, 1.0, 2.5, 5.0)
    assert srv.queued() == []


def test_data_at_the_minimum_rate_outlasts_data_timeout(start):
    """A client that keeps up min_data_rate finishes a transfer longer than
    data_timeout (2 KiB a second against 1 KiB/s for 5 s, data_timeout 2s)."""
    srv = start(command_timeout="30s", data_timeout="2s", min_data_rate=1024)
    c = in_data(srv.port)
    c.send(b"Subject: steady\r\n\r\n")
    line = (b"y" * 510 + b"\r\n") * 2  # 1 KiB
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:
        c.send(line * 2)
        time.sleep(1.0)
    c.send(b".\r\n")
    code, text = c.reply()
    assert code == 250, (code, text)
    assert len(srv.queued()) == 1


def test_without_a_minimum_rate_data_ends_within_data_timeout(start):
    """min_data_rate = 0: DATA must end within data_timeout of its start,
    however fast the client keeps sending."""
    srv = start(command_timeout="30s", data_timeout="2s", min_data_rate=0)
    c = in_data(srv.port)
    cut_off_while_trickling(c, b"z\r\n" * 1000, 0.05, 1.5, 4.0)
    assert srv.queued() == []
