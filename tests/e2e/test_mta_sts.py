"""Outbound MTA-STS (RFC 8461) and TLS reporting (RFC 8460) through the real
server and queue manager.

Every recipient domain's MX is one sink on loopback offering STARTTLS with a
certificate for mx.good.test. A test DNS server publishes each domain's MX,
its `_mta-sts` TXT record and the address of its `mta-sts.` host; a local
HTTPS server (on port 443 of a private loopback address, as RFC 8461 §3.3
fixes the port) serves each domain's policy, with a certificate from a test
CA that `delivery.tls_ca_file` trusts. The global TLS setting is
opportunistic, so what changes a delivery is the policy alone:

- `enforce`, MX named in the policy and the certificate: delivered over TLS;
- `enforce`, certificate for another name: deferred 4.7.5 and kept, where
  without a policy it would have gone out over unauthenticated TLS;
- `enforce`, no MX named in the policy: deferred, no connection tried;
- `testing`, certificate for another name: delivered, and reported;
- a policy that cannot be fetched (404): delivered as without one, reported;
- no `_mta-sts` record: delivered as before (opportunistic).

The TLS reports, written every two seconds here (daily by default), must
count each domain's sessions and failures with RFC 8460's result types, and
the fetched policies must be kept in the data directory's cache file."""

from __future__ import annotations

import http.server
import json
import os
import random
import ssl
import threading

import pytest

from harness import DnsServer
from sinks import make_certs, server_tls
from test_delivery import delivery, relay, send, sink, wait_until  # noqa: F401 (sink is a fixture)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the policy server must listen on port 443 (RFC 8461 §3.3); this run is not root")

POLICIES = {
    "enforce-good.test": ("enforce", ["mx.good.test"]),
    "enforce-bad.test": ("enforce", ["mx.bad.test"]),
    "unlisted.test": ("enforce", ["*.elsewhere.test"]),
    "testing.test": ("testing", ["mx.bad.test"]),
}
MX = {
    "enforce-good.test": "mx.good.test",
    "enforce-bad.test": "mx.bad.test",
    "unlisted.test": "mx.good.test",
    "testing.test": "mx.bad.test",
    "fetch-fails.test": "mx.good.test",
    "no-policy.test": "mx.bad.test",
}


class PolicyServer:
    """HTTPS on <random 127.x.y.z>:443 serving /.well-known/mta-sts.txt per Host."""

    def __init__(self, context: ssl.SSLContext, policies: dict[str, str]):
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                host = (self.headers.get("Host") or "").lower()
                outer.requests.append((host, self.path))
                body = policies.get(host.removeprefix("mta-sts."))
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        for _ in range(50):
            self.ip = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            try:
                self.httpd = http.server.ThreadingHTTPServer((self.ip, 443), Handler)
                break
            except OSError:
                continue
        else:
            raise RuntimeError("no free loopback address for port 443")
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def policy_text(mode: str, mx: list[str]) -> str:
    return "version: STSv1\r\nmode: {}\r\n{}max_age: 86400\r\n".format(
        mode, "".join(f"mx: {m}\r\n" for m in mx))


def test_mta_sts_enforce_testing_and_reports(start, sink, tmp_path):
    ca, cert, key = make_certs(tmp_path / "mx", "mx.good.test", ca_name="MX CA")
    # One certificate for every policy host, from a second CA.
    names = [f"mta-sts.{d}" for d in [*POLICIES, "fetch-fails.test"]]
    web_ca, web_cert, web_key = make_certs(tmp_path / "web", names[0], ca_name="Web CA", also=tuple(names[1:]))
    trust = tmp_path / "trust.pem"
    trust.write_bytes(ca.read_bytes() + web_ca.read_bytes())
    policies = {d: policy_text(mode, mx) for d, (mode, mx) in POLICIES.items()}
    web = PolicyServer(server_tls(web_cert, web_key), policies)
    s = sink(tls_context=server_tls(cert, key))
    records = {("mx.good.test", "A"): ["127.0.0.1"], ("mx.bad.test", "A"): ["127.0.0.1"]}
    for domain, mx in MX.items():
        records[(domain, "MX")] = [(10, mx)]
        if domain != "no-policy.test":
            records[(f"_mta-sts.{domain}", "TXT")] = ["v=STSv1; id=20261204;"]
            records[(f"mta-sts.{domain}", "A")] = [web.ip]
    dns = DnsServer(records)
    reports = tmp_path / "tls-rpt"
    try:
        extra = dns.config() + delivery(smtp_port=s.port, tls="opportunistic", tls_ca_file=str(trust)) + (
            f'[delivery.tls_report]\ndir = "{reports}"\ninterval = "2s"\n')
        srv = start(plugins=[relay()], extra=extra)
        for domain in MX:
            send(srv.port, "alice@example.test", [f"u@{domain}"], domain)
        delivered = {"enforce-good.test", "testing.test", "fetch-fails.test", "no-policy.test"}
        wait_until(lambda: {m.rcpts[0].split("@")[1] for m in s.messages} >= delivered,
                   what="deliveries", srv=srv)
        tls = {m.rcpts[0].split("@")[1]: m.tls for m in s.messages}
        assert tls == {d: True for d in delivered}, tls

        # Enforce with a certificate for another name: kept, explained.
        rec = srv.wait_log(lambda r: r.get("message") == "deferred" and r.get("to") == "u@enforce-bad.test")
        assert rec["status"] == "4.7.5" and "certificate" in rec["reason"].lower(), rec
        rec = srv.wait_log(lambda r: r.get("message") == "deferred" and r.get("to") == "u@unlisted.test")
        assert rec["status"] == "4.7.5" and "lists none of its MX hosts" in rec["reason"], rec
        assert srv.queued(), "the two enforced failures stay queued"

        # Each policy was fetched over HTTPS, with the policy host's name.
        hosts = {h for h, _ in web.requests}
        assert hosts == {f"mta-sts.{d}" for d in [*POLICIES, "fetch-fails.test"]}, web.requests

        # The policies are cached in the data directory.
        cache = json.loads((srv.data_dir / "mta-sts.json").read_text())
        assert {p["domain"]: p["mode"] for p in cache} == {d: m for d, (m, _) in POLICIES.items()}, cache

        def report(domain: str) -> dict | None:
            found = None
            for f in sorted(reports.glob(f"*!{domain}!*.json")):
                found = found or {"policies": []}
                found["policies"] += json.loads(f.read_text())["policies"]
            return found

        def summary(domain: str) -> tuple[int, int, list[str]]:
            r = report(domain) or {"policies": []}
            ok = sum(p["summary"]["total-successful-session-count"] for p in r["policies"])
            failed = sum(p["summary"]["total-failure-session-count"] for p in r["policies"])
            kinds = sorted({d["result-type"] for p in r["policies"] for d in p["failure-details"]})
            return ok, failed, kinds

        wait_until(lambda: all(report(d) for d in ["enforce-good.test", "enforce-bad.test", "testing.test",
                                                   "unlisted.test", "fetch-fails.test"]),
                   what="TLS reports", timeout=20, srv=srv)
        ok, failed, kinds = summary("enforce-good.test")
        assert ok >= 1 and failed == 0, (ok, failed, kinds)
        ok, failed, kinds = summary("enforce-bad.test")
        assert ok == 0 and failed >= 1 and kinds == ["certificate-host-mismatch"], (ok, failed, kinds)
        ok, failed, kinds = summary("testing.test")
        assert failed >= 1 and kinds == ["certificate-host-mismatch"], (ok, failed, kinds)
        ok, failed, kinds = summary("unlisted.test")
        assert failed >= 1 and kinds == ["validation-failure"], (ok, failed, kinds)
        ok, failed, kinds = summary("fetch-fails.test")
        assert kinds == ["sts-policy-fetch-error"], (ok, failed, kinds)
        pol = report("enforce-bad.test")["policies"][0]["policy"]
        assert pol["policy-type"] == "sts" and pol["mx-host"] == ["mx.bad.test"], pol
        assert "mode: enforce" in pol["policy-string"], pol
        assert not list(reports.glob("*!no-policy.test!*")), "a domain without a policy is not reported"
    finally:
        dns.stop()
        web.stop()
