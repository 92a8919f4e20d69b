"""DNSSEC for the DANE tests: a small authoritative server on loopback for
test zones that it signs itself (dnspython: ECDSA P-256, NSEC), and Debian's
unbound as the validating resolver in front of it, with the signed zones'
keys as its trust anchors. Postern asks unbound (`[dns] nameservers`), as
an operator would configure it with a local validating resolver.

Zones are dicts {(name, type): [text rdata, ...]} under an origin; a zone
is signed unless listed in `unsigned`. `bad_sigs` names RRsets whose
signatures are corrupted (unbound then says SERVFAIL: bogus)."""

from __future__ import annotations

import datetime
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"


def _rdata(rtype: str, text: str):
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text)


def _free_port() -> int:
    """A port free on loopback for both UDP and TCP (best effort)."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


class SignedZone:
    def __init__(self, origin: str, records: dict, signed: bool = True, bad_sigs: tuple = ()):
        origin = origin.rstrip(".")
        self.origin = dns.name.from_text(origin)
        self.signed = signed
        zone = dns.zone.Zone(self.origin, relativize=False)
        with zone.writer() as txn:
            txn.add(self.origin, 300, _rdata("SOA", f"ns.{origin}. admin.{origin}. 1 3600 600 86400 60"))
            txn.add(self.origin, 300, _rdata("NS", f"ns.{origin}."))
            txn.add(dns.name.from_text(f"ns.{origin}"), 300, _rdata("A", "127.0.0.1"))
            for (name, rtype), values in records.items():
                for v in values:
                    txn.add(dns.name.from_text(name), 300, _rdata(rtype, v))
        self.dnskey = None
        if signed:
            key = ec.generate_private_key(ec.SECP256R1())
            self.dnskey = dns.dnssec.make_dnskey(key.public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256, flags=257)
            now = datetime.datetime.now(datetime.timezone.utc)
            dns.dnssec.sign_zone(zone, keys=[(key, self.dnskey)], dnskey_ttl=300,
                                 inception=now - datetime.timedelta(hours=1),
                                 expiration=now + datetime.timedelta(days=2))
            for name, rtype in bad_sigs:
                node = zone.get_node(dns.name.from_text(name))
                sigs = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.from_text(rtype))
                broken = [s.replace(signature=bytes([s.signature[0] ^ 1]) + s.signature[1:]) for s in sigs]
                with zone.writer() as txn:
                    txn.replace(dns.name.from_text(name), sigs.ttl, *broken)
        self.zone = zone

    def trust_anchor(self) -> str:
        return f'trust-anchor: "{self.origin.to_text()} DNSKEY {self.dnskey.to_text()}"'

    def _sigs(self, node, rdtype):
        if node is None or not self.signed:
            return None
        return node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype)

    def _add(self, section, name, rdataset):
        rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype, rdataset.covers)
        rrset.update(rdataset)
        section.append(rrset)

    def answer(self, q: dns.message.Message, r: dns.message.Message) -> None:
        qname, qtype = q.question[0].name, q.question[0].rdtype
        do = bool(q.ednsflags & dns.flags.DO)
        node = self.zone.get_node(qname)
        soa_node = self.zone.get_node(self.origin)
        if node is not None:
            rds = node.get_rdataset(dns.rdataclass.IN, qtype)
            if rds is not None:
                self._add(r.answer, qname, rds)
                sigs = self._sigs(node, qtype)
                if do and sigs is not None:
                    self._add(r.answer, qname, sigs)
                return
        # No data or no name: SOA, and the NSEC proof when signed.
        soa = soa_node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.SOA)
        self._add(r.authority, self.origin, soa)
        if do and self.signed:
            self._add(r.authority, self.origin, self._sigs(soa_node, dns.rdatatype.SOA))
        if node is None:
            r.set_rcode(dns.rcode.NXDOMAIN)
        if not (do and self.signed):
            return
        names = sorted(self.zone.nodes.keys())
        proofs = set()
        if node is not None:
            proofs.add(qname)
        else:
            # The closest encloser (empty non-terminals count) and its wildcard.
            encloser = qname.parent()
            while encloser != self.origin and not any(n.is_subdomain(encloser) for n in names):
                encloser = encloser.parent()
            for target in (qname, dns.name.from_text("*", encloser)):
                owner = self.origin
                for n in names:
                    if n < target:
                        owner = n
                proofs.add(owner)
        for owner in proofs:
            n = self.zone.get_node(owner)
            nsec = n.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NSEC)
            if nsec is not None:
                self._add(r.authority, owner, nsec)
                self._add(r.authority, owner, self._sigs(n, dns.rdatatype.NSEC))


class AuthServer:
    """UDP and TCP on one loopback port, answering for `zones`."""

    def __init__(self, zones: list[SignedZone]):
        self.zones = zones
        outer = self

        def respond(data: bytes) -> bytes | None:
            try:
                q = dns.message.from_wire(data)
            except Exception:
                return None
            r = dns.message.make_response(q)
            r.flags |= dns.flags.AA
            qname = q.question[0].name
            zone = max((z for z in outer.zones if qname.is_subdomain(z.origin)),
                       key=lambda z: len(z.origin), default=None)
            if zone is None:
                r.set_rcode(dns.rcode.REFUSED)
            else:
                zone.answer(q, r)
            return r.to_wire()

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                out = respond(data)
                if out is not None:
                    sock.sendto(out, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                head = self.request.recv(2)
                if len(head) < 2:
                    return
                n = int.from_bytes(head, "big")
                data = b""
                while len(data) < n:
                    chunk = self.request.recv(n - len(data))
                    if not chunk:
                        return
                    data += chunk
                out = respond(data)
                if out is not None:
                    self.request.sendall(len(out).to_bytes(2, "big") + out)

        for _ in range(20):
            self.port = _free_port()
            try:
                self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", self.port), Udp)
            except OSError:
                continue
            try:
                self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
                break
            except OSError:
                self.udp.server_close()
        for s in (self.udp, self.tcp):
            s.daemon_threads = True
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def stop(self):
        for s in (self.udp, self.tcp):
            s.shutdown()
            s.server_close()


class Unbound:
    """A validating unbound on loopback that sends every query for `zones`
    to `auth` and trusts the signed ones' keys (no root trust anchor)."""

    def __init__(self, directory: Path, auth: AuthServer, zones: list[SignedZone]):
        directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        stubs = "\n".join(
            f'stub-zone:\n    name: "{z.origin.to_text()}"\n    stub-addr: 127.0.0.1@{auth.port}\n'
            for z in zones)
        anchors = "\n".join(f"    {z.trust_anchor()}" for z in zones if z.signed)
        conf = directory / "unbound.conf"
        conf.write_text(f"""server:
    interface: 127.0.0.1@{self.port}
    port: {self.port}
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{directory}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    do-not-query-localhost: no
    qname-minimisation: no
    aggressive-nsec: no
    harden-below-nxdomain: no
    module-config: "validator iterator"
    access-control: 127.0.0.0/8 allow
    val-permissive-mode: no
    num-threads: 1
    so-reuseport: no
    local-zone: "test." nodefault
    local-zone: "invalid." nodefault
{anchors}
remote-control:
    control-enable: no
{stubs}""")
        self.log = open(directory / "unbound.log", "w")
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"unbound exited: {(directory / 'unbound.log').read_text()}")
            try:
                q = dns.message.make_query("ns." + zones[0].origin.to_text(), "A")
                dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.5)
                break
            except Exception:
                time.sleep(0.05)

    def config(self) -> str:
        return f'[dns]\nnameservers = ["127.0.0.1:{self.port}"]\ntimeout = "2s"\n'

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
