"""Per-domain outbound TLS policy (`[delivery.tls_policy]`, like Postfix's
smtp_tls_policy_maps), through the real server and queue manager: each
recipient domain's MX is a sink on loopback offering STARTTLS with a
certificate for mx.good.test, and the domain's policy decides: `verify`
delivers over verified TLS and defers (4.7.5) a host whose name the
certificate does not match, `encrypt` delivers over TLS without checking
the name, `none` delivers in plain text, and a domain with no entry takes
`[delivery] tls`. `.domain` entries cover subdomains."""

from __future__ import annotations

from harness import DnsServer
from sinks import make_certs, server_tls
from test_delivery import delivery, relay, send, sink, wait_until  # noqa: F401 (sink is a fixture)


def test_each_domain_gets_its_own_tls_policy(start, sink, tmp_path):
    ca, cert, key = make_certs(tmp_path / "mx", "mx.good.test")
    s = sink(tls_context=server_tls(cert, key))
    records = {("mx.good.test", "A"): ["127.0.0.1"], ("mx.bad.test", "A"): ["127.0.0.1"]}
    for domain, mx in [("verify.test", "mx.good.test"), ("mismatch.test", "mx.bad.test"),
                       ("encrypt.test", "mx.bad.test"), ("plain.test", "mx.good.test"),
                       ("sub.partner.test", "mx.bad.test"), ("default.test", "mx.bad.test")]:
        records[(domain, "MX")] = [(10, mx)]
    dns = DnsServer(records)
    try:
        policy = ('[delivery.tls_policy]\n"verify.test" = "verify"\n"mismatch.test" = "verify"\n'
                  '"encrypt.test" = "encrypt"\n"plain.test" = "none"\n".partner.test" = "none"\n')
        srv = start(plugins=[relay()], extra=dns.config() + delivery(
            smtp_port=s.port, tls="encrypt", tls_ca_file=str(ca)) + policy)
        for domain in ["verify", "mismatch", "encrypt", "plain", "sub.partner", "default"]:
            send(srv.port, "alice@example.test", [f"u@{domain}.test"], domain)
        wait_until(lambda: s.count == 5, what="five deliveries", srv=srv)
        tls = {m.rcpts[0].split("@")[1]: m.tls for m in s.messages}
        assert tls == {"verify.test": True, "encrypt.test": True, "plain.test": False,
                       "sub.partner.test": False, "default.test": True}, tls
        # `verify` to a host the certificate does not name: kept, explained.
        rec = srv.wait_log(lambda r: r.get("message") == "deferred" and r.get("to") == "u@mismatch.test")
        assert rec["status"] == "4.7.5" and "certificate" in rec["reason"].lower(), rec
        assert "u@mismatch.test" not in [m.rcpts[0] for m in s.messages]
    finally:
        dns.stop()
