"""A tiny authoritative DNS responder on loopback (UDP, standard library
only) for the mail-auth bench target: answers TXT queries from a table and
NXDOMAIN for everything else, so SPF, DKIM and DMARC look-ups cost a real
round trip through the host's resolver without the network."""

from __future__ import annotations

import socket
import struct
import threading


class DnsStub:
    def __init__(self, txt: dict[str, str]):
        self.txt = {k.rstrip(".").lower(): v for k, v in txt.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, addr = self.sock.recvfrom(4096)
                self.sock.sendto(self.answer(data), addr)
            except OSError:
                return
            except Exception:  # a malformed query: no answer
                continue

    def answer(self, q: bytes) -> bytes:
        (qid,) = struct.unpack(">H", q[:2])
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        name = ".".join(labels).lower()
        value = self.txt.get(name) if qtype == 16 else None
        if value is None:
            rcode = 0 if name in self.txt else 3
            return struct.pack(">HHHHHH", qid, 0x8580 | rcode, 1, 0, 0, 0) + question
        data = value.encode()
        rdata = b"".join(bytes([len(c)]) + c for c in (data[j:j + 255] for j in range(0, len(data), 255)))
        rr = struct.pack(">HHHIH", 0xC00C, 16, 1, 300, len(rdata)) + rdata
        return struct.pack(">HHHHHH", qid, 0x8580, 1, 1, 0, 0) + question + rr
