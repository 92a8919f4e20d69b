"""Outbound DANE (RFC 7672) through the real server and queue manager: the
recipient domains' MX, address and TLSA records live in test zones that a
loopback authoritative server signs (dnspython), behind Debian's unbound as
the validating resolver (`[dns] nameservers`), which trusts the zones' keys.
Every MX is one STARTTLS sink on loopback whose certificate (for
mx.ta.dane.test, signed by a throwaway CA sent in the chain) the TLSA
records name or do not. The TLSA owner is `_<port>._tcp.<mx host>` with
the sink's port, as the port used. Postern trusts unbound's AD bit."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dnssec_dns import UNBOUND, AuthServer, SignedZone, Unbound
from sinks import make_certs, server_tls
from test_delivery import delivery, relay, send, sink, wait_until  # noqa: F401 (sink is a fixture)

if not os.path.exists(UNBOUND) and (os.environ.get("CI") or os.environ.get("POSTERN_REQUIRE_PEERS")):
    # `make test` installs unbound: a skip under CI would hide lost coverage.
    raise RuntimeError(f"{UNBOUND} is missing (install unbound); CI/POSTERN_REQUIRE_PEERS requires it")
pytestmark = pytest.mark.skipif(not os.path.exists(UNBOUND), reason="unbound is not installed (make test-deps)")


def _spki_sha256(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _cert_sha256(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@pytest.fixture
def dane_world(sink, tmp_path):
    """A STARTTLS sink, signed `dane.test` and unsigned `plain.test` zones
    giving each case its MX host, unbound in front; yields (sink, unbound)."""
    ca, cert, key = make_certs(tmp_path / "mx", "mx.ta.dane.test")
    chain = tmp_path / "mx" / "chain.pem"
    chain.write_bytes(cert.read_bytes() + ca.read_bytes())
    s = sink(tls_context=server_tls(chain, key))
    ee = "3 1 1 " + _spki_sha256(cert.read_bytes())
    wrong = "3 1 1 " + "00" * 32
    ta = "2 0 1 " + _cert_sha256(ca.read_bytes())
    tlsa = {
        "ee": [ee],               # (1) matching DANE-EE
        "mismatch": [wrong],      # (2) a TLSA record the certificate does not match
        "none": None,             # (3) signed, no TLSA: `dane` is `may`
        "ta": [ta],               # (5) DANE-TA: chain to the CA, name mx.ta.dane.test
        "taname": [ta],           # (5) DANE-TA, but the certificate names another host
        "pkix": ["1 1 1 " + _spki_sha256(cert.read_bytes())],  # unusable for SMTP: no DANE
        "bogus": [ee],            # the TLSA signature is broken: SERVFAIL
    }
    records, bad = {}, []
    for case, values in tlsa.items():
        mx = f"mx.{case}.dane.test"
        records[(f"{case}.dane.test", "MX")] = [f"10 {mx}."]
        records[(mx, "A")] = ["127.0.0.1"]
        if values:
            records[(f"_{s.port}._tcp.{mx}", "TLSA")] = values
    bad.append((f"_{s.port}._tcp.mx.bogus.dane.test", "TLSA"))
    signed = SignedZone("dane.test", records, bad_sigs=tuple(bad))
    plain = SignedZone("plain.test", {
        ("plain.test", "MX"): ["10 mx.plain.test."],
        ("mx.plain.test", "A"): ["127.0.0.1"],
        (f"_{s.port}._tcp.mx.plain.test", "TLSA"): [ee],
    }, signed=False)
    auth = AuthServer([signed, plain])
    resolver = Unbound(tmp_path / "unbound", auth, [signed, plain])
    try:
        yield s, resolver
    finally:
        resolver.stop()
        auth.stop()


def _deferred(srv, rcpt):
    return srv.wait_log(lambda r: r.get("message") == "deferred" and r.get("to") == rcpt, 20)


def test_dane_deliveries(start, dane_world):
    s, resolver = dane_world
    policy = ('[delivery.tls_policy]\n"ee.dane.test" = "dane-only"\n"ta.dane.test" = "dane-only"\n'
              '"none.dane.test" = "dane"\n"plain.test" = "dane"\n"pkix.dane.test" = "dane"\n')
    srv = start(plugins=[relay()], extra=resolver.config() + delivery(smtp_port=s.port, tls="none") + policy)
    domains = ["ee.dane.test", "ta.dane.test", "none.dane.test", "plain.test", "pkix.dane.test"]
    for d in domains:
        send(srv.port, "alice@example.test", [f"u@{d}"], d)
    wait_until(lambda: s.count == len(domains), what="five deliveries", srv=srv)
    tls = {m.rcpts[0].split("@")[1]: m.tls for m in s.messages}
    # DANE hosts over authenticated TLS; the others as `may` (TLS, since offered).
    assert tls == dict.fromkeys(domains, True), tls


def test_dane_failures_defer_and_keep_the_message(start, dane_world):
    s, resolver = dane_world
    policy = ('[delivery.tls_policy]\n"mismatch.dane.test" = "dane"\n"taname.dane.test" = "dane-only"\n'
              '"plain.test" = "dane-only"\n"none.dane.test" = "dane-only"\n"bogus.dane.test" = "dane"\n'
              '"ee.dane.test" = "dane-only"\n')
    srv = start(plugins=[relay()], extra=resolver.config() + delivery(
        smtp_port=s.port, tls="opportunistic", retry_intervals=["1h"]) + policy
        + '[delivery.tls_report]\ninterval = "2s"\n')
    failing = ["mismatch.dane.test", "taname.dane.test", "plain.test", "none.dane.test", "bogus.dane.test"]
    for d in failing + ["ee.dane.test"]:
        send(srv.port, "alice@example.test", [f"u@{d}"], d)
    reasons = {}
    for d in failing:
        rec = _deferred(srv, f"u@{d}")
        assert rec["status"] == "4.7.5", rec
        reasons[d] = rec["reason"]
    # The control case in the same queue is delivered.
    wait_until(lambda: s.count == 1, what="the dane-only control delivery", srv=srv)
    assert [m.rcpts for m in s.messages] == [["u@ee.dane.test"]]
    assert "no TLSA record matches" in reasons["mismatch.dane.test"], reasons
    assert "DANE-TA" in reasons["taname.dane.test"], reasons
    assert "not DNSSEC-validated" in reasons["plain.test"], reasons
    assert "no TLSA records" in reasons["none.dane.test"], reasons
    assert "TLSA look-up" in reasons["bogus.dane.test"], reasons
    # Nothing fell back to plain text or unauthenticated TLS; all kept.
    wait_until(lambda: len(srv.queued()) == len(failing), what="the deferred messages queued", srv=srv)
    assert s.count == 1

    # TLS reports (RFC 8460): the DANE sessions counted under policy type
    # tlsa, with the host's records, the failure and the success.
    def tlsa_policies(domain):
        out = []
        for f in (srv.data_dir / "tls-rpt").glob(f"*!{domain}!*.json"):
            out += [p for p in json.loads(f.read_text())["policies"] if p["policy"]["policy-type"] == "tlsa"]
        return out

    wait_until(lambda: tlsa_policies("mismatch.dane.test") and tlsa_policies("ee.dane.test"),
               what="TLS reports for the DANE sessions", timeout=20, srv=srv)
    (bad,) = tlsa_policies("mismatch.dane.test")[:1]
    assert bad["policy"]["policy-string"] == ["3 1 1 " + "00" * 32], bad
    assert bad["policy"]["mx-host"] == ["mx.mismatch.dane.test"], bad
    assert bad["summary"]["total-failure-session-count"] >= 1, bad
    assert bad["failure-details"][0]["result-type"] == "validation-failure", bad
    ok = tlsa_policies("ee.dane.test")
    assert sum(p["summary"]["total-successful-session-count"] for p in ok) >= 1, ok
