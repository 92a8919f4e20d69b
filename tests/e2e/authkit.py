"""Helpers for the mail-authentication suites: DKIM keys for dkimpy and the
test DNS, message sending over one SMTP session, Authentication-Results
parsing, and opendkim-testmsg run offline (a private network namespace whose
resolver is a stub serving the test's key records)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import Raw


def chunks(value: str, n: int = 255) -> list[str]:
    return [value[i:i + n] for i in range(0, len(value), n)]


class RsaKey:
    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())
        spki = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.record = f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"
        self.algorithm = b"rsa-sha256"


class Ed25519Key:
    def __init__(self):
        import nacl.signing  # type: ignore

        sk = nacl.signing.SigningKey.generate()
        self.private = base64.b64encode(bytes(sk))  # dkimpy: the base64 seed
        self.record = f"v=DKIM1; k=ed25519; p={base64.b64encode(bytes(sk.verify_key)).decode()}"
        self.algorithm = b"ed25519-sha256"


def dkimpy_sign(msg: bytes, key, domain: str, selector: str, canon=(b"relaxed", b"relaxed"),
                length: bool = False) -> bytes:
    import dkim  # type: ignore

    sig = dkim.sign(msg, selector.encode(), domain.encode(), key.private, canonicalize=canon,
                    signature_algorithm=key.algorithm, length=length, linesep=b"\r\n",
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig + msg


def make(sender_from: str, subject: str, body: str = "Hello.\r\nSecond line.\r\n") -> bytes:
    return (f"From: <{sender_from}>\r\nTo: <rcpt@example.test>\r\nSubject: {subject}\r\n"
            f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject))}@t.test>\r\n"
            f"\r\n{body}").encode()


def send(c: Raw, mail_from: str, data: bytes) -> tuple[int, str]:
    """One transaction on an open session: the MAIL FROM reply when it is
    not 250, else the reply to the end of DATA."""
    code, text = c.cmd(f"MAIL FROM:<{mail_from}>")
    if code != 250:
        return code, text
    code, text = c.cmd("RCPT TO:<rcpt@example.test>")
    assert code == 250, (code, text)
    assert c.cmd("DATA")[0] == 354
    lines = data.split(b"\r\n")
    stuffed = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    c.send(stuffed + b".\r\n")
    return c.reply()


def queue_id(text: str) -> str:
    m = re.search(r"queued as (\S+)", text)
    assert m, text
    return m.group(1)


def header_values(message: bytes, name: str) -> list[str]:
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    unfolded = re.sub(r"\r\n([ \t])", r"\1", head)
    out = []
    for line in unfolded.split("\r\n"):
        k, _, v = line.partition(":")
        if k.lower() == name.lower():
            out.append(v.strip())
    return out


def auth_results(message: bytes) -> str:
    values = header_values(message, "Authentication-Results")
    assert len(values) == 1, values
    return values[0]


def method(ar: str, name: str) -> list[str]:
    """The results of `name` (spf, dkim, dmarc, arc) in an A-R value."""
    return re.findall(rf"(?:^|;\s*){name}=(\w+)", ar)


STUB = textwrap.dedent("""
    import subprocess, sys, json
    from dnslib import RR, QTYPE, TXT, RCODE
    from dnslib.server import BaseResolver, DNSServer, DNSLogger
    records = json.loads(sys.argv[1])
    class R(BaseResolver):
        def resolve(self, request, handler):
            reply = request.reply()
            name = str(request.q.qname).rstrip('.').lower()
            if name in records and QTYPE[request.q.qtype] == 'TXT':
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(records[name]), ttl=60))
            else:
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
    quiet = DNSLogger(log='-request,-reply,-truncated,-error,-recv,-send,-data', prefix=False)
    for tcp in (False, True):
        DNSServer(R(), port=53, address='127.0.0.1', tcp=tcp, logger=quiet).start_thread()
    r = subprocess.run(['opendkim-testmsg'], stdin=open(sys.argv[2], 'rb'), capture_output=True)
    sys.stdout.write(r.stdout.decode() + r.stderr.decode())
    sys.exit(r.returncode)
""")


def opendkim_verify(message: bytes, records: dict[str, list[str]], tmp: Path) -> subprocess.CompletedProcess:
    """Verify with opendkim-testmsg, offline: in a new mount and network
    namespace, /etc/resolv.conf names 127.0.0.1 where a stub answers the
    key records. Exit 0 and no output means every signature verified."""
    msg = tmp / "opendkim-msg.eml"
    msg.write_bytes(message)
    resolv = tmp / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
    script = tmp / "stub.py"
    script.write_text(STUB)
    shell = (f"ip link set lo up && mount --bind {resolv} /etc/resolv.conf && "
             f"exec {sys.executable} {script} '{json.dumps(records)}' {msg}")
    return subprocess.run(["unshare", "--mount", "--net", "sh", "-c", shell],
                          capture_output=True, text=True, timeout=60)
