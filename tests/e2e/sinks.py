"""SMTP sinks for delivery tests: a small threaded SMTP server on loopback
(127.0.0.1, or ::1) that records every message it accepts, can answer scripted
replies per RCPT / DATA, offer or withhold 8BITMIME and SMTPUTF8, speak STARTTLS with a given certificate, require AUTH,
hold its greeting until a gate opens, and hang up after a number of messages per
session; it counts sessions, the peak of concurrent ones, and STARTTLS use.
Plus a throwaway CA and server certificate (cryptography)."""

from __future__ import annotations

import datetime
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    data: bytes
    tls: bool
    helo: str
    auth: str | None
    mail_args: str = ""
    # The BDAT chunk sizes the message came in (empty: it came by DATA).
    chunks: list[int] = field(default_factory=list)

    @property
    def subject(self) -> str:
        m = re.search(rb"^Subject: (.*?)\r?$", self.data, re.M | re.I)
        return m.group(1).decode() if m else ""


Reply = Callable[[str], "str | None"]


@dataclass
class SmtpSink:
    """`rcpt(address)` / `data(received)` / `mail(sender)` return a reply line
    such as "451 4.3.0 later", or None for the default 2xx. `gate`, when given,
    holds every greeting until it is set. After `session_limit` messages in one
    session (0: no limit) the sink hangs up: at once after its 250 (as on an
    idle time-out), or, with `limit_reply`, answering the next command with it.
    `sessions` counts greeted sessions, `peak` the most connections open at
    once (gated ones included), `starttls` the STARTTLS commands accepted."""

    rcpt: Reply | None = None
    data: Callable[[Received], "str | None"] | None = None
    mail: Reply | None = None
    tls_context: ssl.SSLContext | None = None
    auth: dict | None = None
    gate: threading.Event | None = None
    pipelining: bool = True
    chunking: bool = False
    dsn: bool = False
    requiretls: bool = False
    # Offer 8BITMIME / SMTPUTF8 in the EHLO reply.
    eightbitmime: bool = True
    smtputf8: bool = False
    size: int = 0
    host: str = "127.0.0.1"
    session_limit: int = 0
    limit_reply: str | None = None
    messages: list[Received] = field(default_factory=list)
    rcpt_attempts: list[str] = field(default_factory=list)
    # Every RCPT TO argument as sent (with its parameters).
    rcpt_lines: list[str] = field(default_factory=list)
    sessions: int = 0
    active: int = 0
    peak: int = 0
    starttls: int = 0

    def __post_init__(self):
        self.lock = threading.Lock()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    # -- observation --------------------------------------------------------
    @property
    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def subjects(self) -> list[str]:
        with self.lock:
            return [m.subject for m in self.messages]

    def stop(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass

    # -- server ---------------------------------------------------------------
    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            self._run(conn)
        except (OSError, ValueError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self.lock:
                self.active -= 1

    def _take(self, got: Received, send) -> bool:
        """The end of a message (DATA's "." or BDAT LAST): the scripted
        reply, or keep it and answer 250; True when kept."""
        scripted = self.data(got) if self.data else None
        if scripted:
            send(scripted)
            return False
        with self.lock:
            self.messages.append(got)
        send("250 2.0.0 queued")
        return True

    def _run(self, conn: socket.socket):
        conn.settimeout(30)
        if self.gate is not None:
            while not self.gate.wait(0.1):
                if self.stopped:
                    return
        with self.lock:
            self.sessions += 1
        rfile = conn.makefile("rb")
        tls = False
        helo = ""
        auth_user = None
        mail_from = None
        mail_args = ""
        rcpts: list[str] = []
        accepted = 0
        chunks: list[bytes] = []

        def send(line: str):
            conn.sendall(line.encode() + b"\r\n")

        send("220 sink.test ESMTP ready")
        while True:
            raw = rfile.readline(4096)
            if not raw:
                return
            if self.session_limit and accepted >= self.session_limit:
                if self.limit_reply:
                    send(self.limit_reply)
                return
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = line.split(" ", 1)[0].upper()
            arg = line[len(verb):].strip()
            if verb == "EHLO":
                helo = arg
                caps = ["sink.test"]
                if self.pipelining:
                    caps.append("PIPELINING")
                caps.append(f"SIZE {self.size}" if self.size else "SIZE")
                if self.eightbitmime:
                    caps.append("8BITMIME")
                if self.smtputf8:
                    caps.append("SMTPUTF8")
                caps.append("ENHANCEDSTATUSCODES")
                if self.chunking:
                    caps.append("CHUNKING")
                if self.dsn:
                    caps.append("DSN")
                if self.requiretls and tls:
                    caps.append("REQUIRETLS")
                if self.tls_context is not None and not tls:
                    caps.append("STARTTLS")
                if self.auth is not None:
                    caps.append("AUTH PLAIN LOGIN")
                for c in caps[:-1]:
                    send(f"250-{c}")
                send(f"250 {caps[-1]}")
            elif verb == "HELO":
                helo = arg
                send("250 sink.test")
            elif verb == "STARTTLS" and self.tls_context is not None and not tls:
                with self.lock:
                    self.starttls += 1
                send("220 2.0.0 go ahead")
                conn = self.tls_context.wrap_socket(conn, server_side=True)
                rfile = conn.makefile("rb")
                tls = True
                mail_from, rcpts = None, []
            elif verb == "AUTH" and self.auth is not None:
                import base64
                parts = arg.split()
                if parts and parts[0].upper() == "PLAIN" and len(parts) == 2:
                    _, user, password = base64.b64decode(parts[1]).split(b"\0")
                    user, password = user.decode(), password.decode()
                elif parts and parts[0].upper() == "LOGIN":
                    send("334 VXNlcm5hbWU6")
                    user = base64.b64decode(rfile.readline().strip()).decode()
                    send("334 UGFzc3dvcmQ6")
                    password = base64.b64decode(rfile.readline().strip()).decode()
                else:
                    send("504 5.5.4 unsupported")
                    continue
                if self.auth.get(user) == password:
                    auth_user = user
                    send("235 2.7.0 authenticated")
                else:
                    send("535 5.7.8 bad credentials")
            elif verb == "MAIL":
                m = re.match(r"FROM:<([^>]*)>(.*)", arg, re.I)
                scripted = self.mail(m.group(1)) if (self.mail and m) else None
                if scripted:
                    send(scripted)
                    continue
                mail_from, mail_args, rcpts = m.group(1), m.group(2).strip(), []
                send("250 2.1.0 ok")
            elif verb == "RCPT":
                m = re.match(r"TO:<([^>]*)>", arg, re.I)
                addr = m.group(1) if m else ""
                with self.lock:
                    self.rcpt_attempts.append(addr)
                    self.rcpt_lines.append(arg)
                if mail_from is None:
                    send("503 5.5.1 need MAIL")
                    continue
                scripted = self.rcpt(addr) if self.rcpt else None
                if scripted:
                    send(scripted)
                else:
                    rcpts.append(addr)
                    send("250 2.1.5 ok")
            elif verb == "DATA":
                if mail_from is None or not rcpts:
                    send("554 5.5.1 no valid recipients")
                    continue
                send("354 go ahead")
                lines = []
                while True:
                    raw = rfile.readline(1 << 20)
                    if not raw:
                        return
                    if raw == b".\r\n":
                        break
                    if raw.startswith(b"."):
                        raw = raw[1:]
                    lines.append(raw)
                got = Received(mail_from, rcpts, b"".join(lines), tls, helo, auth_user, mail_args)
                if self._take(got, send):
                    accepted += 1
                    if self.session_limit and accepted >= self.session_limit and not self.limit_reply:
                        return  # hang up at once, as on an idle time-out
                mail_from, rcpts = None, []
            elif verb == "BDAT" and self.chunking:
                words = arg.split()
                size, last = int(words[0]), len(words) > 1 and words[1].upper() == "LAST"
                chunk = rfile.read(size) if size else b""
                if mail_from is None or not rcpts:
                    send("503 5.5.1 no transaction")
                    continue
                chunks.append(chunk)
                if not last:
                    send(f"250 2.0.0 {size} octets")
                    continue
                got = Received(mail_from, rcpts, b"".join(chunks), tls, helo, auth_user, mail_args,
                               [len(c) for c in chunks])
                chunks = []
                if self._take(got, send):
                    accepted += 1
                mail_from, rcpts = None, []
            elif verb == "RSET":
                chunks = []
                mail_from, rcpts = None, []
                send("250 2.0.0 ok")
            elif verb == "NOOP":
                send("250 2.0.0 ok")
            elif verb == "QUIT":
                send("221 2.0.0 bye")
                return
            else:
                send("502 5.5.2 unknown command")


def make_certs(directory: Path, hostname: str, ca_name: str = "Postern Test CA",
               client: bool = False, also: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server (or, with `client`, a client) certificate
    for `hostname` (and the names in `also`) signed by it: (ca.pem, cert.pem,
    key.pem) in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in (hostname, *also)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client
                                              else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
