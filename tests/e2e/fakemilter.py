"""A scripted milter (Sendmail milter protocol 6, the MTA's peer) for the
milter tests: negotiates, answers every command, and at the end of a
message asks for modifications; it can also refuse recipients with a reply
code, close the connection at MAIL FROM (a milter that dies), or never
answer at RCPT TO (a milter that hangs). Trusts the MTA's packets only as
far as it needs to; a bad packet ends its session."""

from __future__ import annotations

import os
import socket
import struct
import threading
from dataclasses import dataclass, field


def packet(code: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + code + data


@dataclass
class FakeMilter:
    path: str
    reject_rcpt: str = ""          # RCPT containing this: "550 5.7.1 milter says no"
    die_at_mail: bool = False
    hang_at_rcpt: bool = False
    add_header: tuple[str, str] | None = ("X-Milter", "checked")
    change_subject: str | None = None
    add_rcpt: str | None = None
    sessions: int = 0
    commands: list[bytes] = field(default_factory=list)

    def __post_init__(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(64)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopped = True
        self.sock.close()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.sessions += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _read(self, f):
        head = f.read(4)
        if len(head) < 4:
            return None, b""
        n = struct.unpack(">I", head)[0]
        body = f.read(n)
        return body[:1], body[1:]

    def _session(self, conn: socket.socket):
        f = conn.makefile("rb")
        try:
            while True:
                code, data = self._read(f)
                if code is None:
                    return
                self.commands.append(code)
                if code == b"O":
                    # Version 6, ask to add and change headers and recipients.
                    conn.sendall(packet(b"O", struct.pack(">III", 6, 0x1 | 0x4 | 0x10, 0)))
                elif code in (b"D", b"A"):
                    continue
                elif code == b"Q":
                    return
                elif code == b"M" and self.die_at_mail:
                    return
                elif code == b"R" and self.hang_at_rcpt:
                    threading.Event().wait(60)
                    return
                elif code == b"R" and self.reject_rcpt and self.reject_rcpt.encode() in data:
                    conn.sendall(packet(b"y", b"550 5.7.1 milter says no\0"))
                elif code == b"E":
                    out = b""
                    if self.add_header:
                        out += packet(b"h", self.add_header[0].encode() + b"\0" + self.add_header[1].encode() + b"\0")
                    if self.change_subject is not None:
                        out += packet(b"m", struct.pack(">I", 1) + b"Subject\0" + self.change_subject.encode() + b"\0")
                    if self.add_rcpt:
                        out += packet(b"+", f"<{self.add_rcpt}>".encode() + b"\0")
                    conn.sendall(out + packet(b"c"))
                else:
                    conn.sendall(packet(b"c"))
        except OSError:
            return
        finally:
            conn.close()
