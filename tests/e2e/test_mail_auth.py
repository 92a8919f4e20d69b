"""Mail authentication through the real server (plugins/mail-auth and the
host's "mail-auth" capability), DNS answered by a test server on loopback
through `[dns] nameservers`:

- dkimpy-signed messages (RSA and Ed25519, relaxed/simple, with and without
  `l=`) verify as dkim=pass in the spooled Authentication-Results, and a
  one-byte body change makes them dkim=fail;
- an SPF and DMARC table (include, redirect, macros, exists, ptr, a, mx,
  IPv6, the 10-look-up and 2-void-look-up limits), SPF cross-checked with
  pyspf on the same DNS server, and `postern spf` for client addresses
  other than loopback (ptr, %{p}, IPv6 voids);
- DMARC quarantine held in the queue (contract 0.2);
- a forged From: of a p=reject domain is refused with 550 5.7.1; signed, it
  passes;
- SPF actions at MAIL FROM (550 5.7.23, 451 4.7.24);
- forged Authentication-Results claiming our authserv-id are removed;
- messages Postern signs (keys from `postern dkim keygen`, read through the
  plugin's read-only files grant) verify with dkimpy and opendkim-testmsg,
  and a key outside the grant cannot be read."""

from __future__ import annotations

import re
import subprocess
import urllib.request

import pytest
from authkit import (Ed25519Key, RsaKey, auth_results, chunks, dkimpy_sign, header_values, make,
                     method, opendkim_verify, queue_id, send)
from harness import BIN, TARGET, DnsServer, Raw, Server, ipv6_loopback, render_config
from pluginkit import component, greet

HELO = "client.test"
VOID = [f"a:v{i}.void.test" for i in (1, 2, 3)]

SPF = {
    # domain: (record or None, expected result for 127.0.0.1)
    "pass.test": ("v=spf1 ip4:127.0.0.1 -all", "pass"),
    "fail.test": ("v=spf1 ip4:192.0.2.1 -all", "fail"),
    "softfail.test": ("v=spf1 ~all", "softfail"),
    "neutral.test": ("v=spf1 ?all", "neutral"),
    "plus-all.test": ("v=spf1 +all", "pass"),
    "none.test": ("not an spf record", "none"),
    "nx.test": (None, "none"),
    "cidr.test": ("v=spf1 ip4:127.0.0.0/8 -all", "pass"),
    "a.test": ("v=spf1 a -all", "pass"),
    "a-host.test": ("v=spf1 a:host.a-host.test -all", "fail"),
    "a-cidr.test": ("v=spf1 a:host.a-host.test/24 -all", "pass"),
    "mx.test": ("v=spf1 mx -all", "pass"),
    "mx-miss.test": ("v=spf1 mx:fail.test -all", "fail"),
    "include.test": ("v=spf1 include:pass.test -all", "pass"),
    "include-fail.test": ("v=spf1 include:fail.test ~all", "softfail"),
    "include-none.test": ("v=spf1 include:none.test -all", "permerror"),
    "redirect.test": ("v=spf1 redirect=fail.test", "fail"),
    "redirect-pass.test": ("v=spf1 redirect=pass.test", "pass"),
    "exists.test": ("v=spf1 exists:%{i}.ex.exists.test -all", "pass"),
    "macro-ir.test": ("v=spf1 exists:%{ir}.%{v}._spf.%{d} -all", "pass"),
    "macro-d2.test": ("v=spf1 exists:%{d2}.%{l}.m.macro-d2.test -all", "pass"),
    "ptr-other.test": ("v=spf1 ptr:elsewhere.test -all", "fail"),
    "ip6.test": ("v=spf1 ip6:2001:db8::/32 -all", "fail"),
    "ip6-loop.test": ("v=spf1 ip6:::1 ip4:192.0.2.9 -all", "fail"),
    "void2.test": ("v=spf1 " + " ".join(VOID[:2]) + " ip4:127.0.0.1 -all", "pass"),
    "limit11.test": ("v=spf1 " + " ".join(f"include:l{i}.lim.test" for i in range(11)) + " ip4:127.0.0.1 -all",
                     "permerror"),
    "limit10.test": ("v=spf1 " + " ".join(f"include:l{i}.lim.test" for i in range(10)) + " ip4:127.0.0.1 -all",
                     "pass"),
    "syntax.test": ("v=spf1 ip4:bogus -all", "permerror"),
    "two.test": (["v=spf1 -all", "v=spf1 +all"], "permerror"),
    "exp.test": ("v=spf1 -all exp=why.exp.test", "fail"),
    "broken.test": (None, "temperror"),  # SERVFAIL
}
# Cases by sender address (local part matters for %{l}).
SPF_SENDERS = {d: f"user@{d}" for d in SPF}
SPF_SENDERS["macro-l.test"] = "alice@macro-l.test"
SPF["macro-l.test"] = ("v=spf1 exists:%{l}.users.macro-l.test -all", "pass")
SPF_SENDERS["macro-l-bob"] = "bob@macro-l.test"

DMARC = {
    "_dmarc.strict.test": "v=DMARC1; p=reject; sp=none",
    "_dmarc.pass.test": "v=DMARC1; p=reject",
    "_dmarc.quar.test": "v=DMARC1; p=quarantine",
    "_dmarc.nopolicy.test": "v=DMARC1; p=none",
    "_dmarc.pct0.test": "v=DMARC1; p=reject; pct=0",
    "_dmarc.override.test": "v=DMARC1; p=reject",
}

# (From domain, MAIL FROM, expected reply code, expected dmarc=, quarantine header?)
DMARC_CASES = [
    ("pass.test", "user@pass.test", 250, "pass", False),
    ("pass.test", "user@sub.pass.test", 250, "pass", False),  # relaxed SPF alignment
    ("strict.test", "user@pass.test", 550, None, False),
    ("sub.strict.test", "user@pass.test", 250, "fail", False),  # sp=none
    ("quar.test", "user@pass.test", 250, "fail", True),
    ("nopolicy.test", "user@pass.test", 250, "fail", False),
    ("nodmarc.test", "user@pass.test", 250, "none", False),
    ("pct0.test", "user@pass.test", 250, "fail", True),  # sampled out: reject → quarantine
    ("override.test", "user@pass.test", 250, "fail", False),  # operator override "none"
]


def zone() -> dict:
    r: dict = {}
    for d, (rec, _) in SPF.items():
        if rec is not None:
            r[(d, "TXT")] = rec if isinstance(rec, list) else [rec]
    r[("sub.pass.test", "TXT")] = ["v=spf1 ip4:127.0.0.1 -all"]
    r[("client.test", "TXT")] = ["v=spf1 ip4:127.0.0.1 -all"]
    r[("a.test", "A")] = ["127.0.0.1"]
    r[("host.a-host.test", "A")] = ["127.0.0.77"]
    r[("mx.test", "MX")] = [(10, "mail.mx.test")]
    r[("mail.mx.test", "A")] = ["127.0.0.1"]
    r[("fail.test", "MX")] = [(10, "mail.fail.test")]
    r[("mail.fail.test", "A")] = ["192.0.2.1"]
    r[("127.0.0.1.ex.exists.test", "A")] = ["127.0.0.2"]
    r[("1.0.0.127.in-addr._spf.macro-ir.test", "A")] = ["127.0.0.2"]
    r[("alice.users.macro-l.test", "A")] = ["127.0.0.2"]
    r[("macro-d2.test.user.m.macro-d2.test", "A")] = ["192.0.2.1"]  # exists: any A matches
    r[("void.test", "TXT")] = ["v=spf1 " + " ".join(VOID) + " -all"]
    for i in range(11):
        r[(f"l{i}.lim.test", "TXT")] = ["v=spf1 ip4:192.0.2.200"]
    r[("why.exp.test", "TXT")] = ["%{i} is not one of %{d}'s servers"]
    for name, rec in DMARC.items():
        r[(name, "TXT")] = [rec]
    for d in ("strict.test", "quar.test", "nopolicy.test", "nodmarc.test", "pct0.test", "override.test"):
        r[(d, "A")] = ["192.0.2.50"]
    r[("sub.strict.test", "A")] = ["192.0.2.50"]
    return r


@pytest.fixture(scope="module")
def keys():
    return {"rsa": RsaKey(), "ed": Ed25519Key(), "strict": RsaKey()}


@pytest.fixture(scope="module")
def dns(keys):
    d = DnsServer(zone(), servfail=("broken.test",))
    d.add("rsa._domainkey.signer.test", "TXT", [chunks(keys["rsa"].record)])
    d.add("ed._domainkey.signer.test", "TXT", [keys["ed"].record])
    d.add("s1._domainkey.strict.test", "TXT", [chunks(keys["strict"].record)])
    d.add("signer.test", "TXT", ["v=spf1 ip4:127.0.0.1 -all"])
    yield d
    d.stop()


def mail_auth(config: dict | None = None, **settings) -> dict:
    cfg = {"spf": {"fail": "tag", "softfail": "tag", "temperror": "tag", "permerror": "tag"},
           "dmarc": {"overrides": {"override.test": "none"}}}
    cfg.update(config or {})
    return {**component("mail-auth-policy", cfg, capabilities=["mail-auth"], timeout_ms=10000, **settings),
            "name": "mail-auth"}


@pytest.fixture(scope="module")
def verifier(tmp_path_factory, dns):
    extra = dns.config("2s") + '[metrics]\nlisten = "127.0.0.1:0"\n'
    with Server(tmp_path_factory.mktemp("verify"), [mail_auth()], extra=extra) as srv:
        yield srv


def spooled(srv, reply) -> bytes:
    code, text = reply
    assert code == 250, reply
    return srv.read_queued(queue_id(text))[1]


DKIM_VARIANTS = [
    ("rsa", (b"relaxed", b"relaxed"), False),
    ("rsa", (b"simple", b"simple"), False),
    ("rsa", (b"relaxed", b"simple"), True),
    ("ed", (b"relaxed", b"relaxed"), False),
    ("ed", (b"simple", b"relaxed"), True),
]


def test_dkimpy_signatures_verify_and_a_changed_byte_fails(verifier, keys):
    c = greet(verifier.port, HELO)
    for sel, canon, length in DKIM_VARIANTS:
        label = f"{sel} {canon[0].decode()}/{canon[1].decode()} l={length}"
        signed = dkimpy_sign(make("a@signer.test", label), keys[sel], "signer.test", sel, canon, length)
        ar = auth_results(spooled(verifier, send(c, "a@signer.test", signed)))
        assert method(ar, "dkim") == ["pass"], (label, ar)
        assert f"header.d=signer.test header.s={sel}" in ar, ar
        assert method(ar, "spf") == ["pass"] and method(ar, "dmarc") == ["none"], ar
        tampered = signed.replace(b"Second line.", b"Second line!")
        ar = auth_results(spooled(verifier, send(c, "a@signer.test", tampered)))
        assert method(ar, "dkim") == ["fail"], (label, ar)
    c.close()


def test_forged_from_of_a_reject_domain_is_refused_and_passes_when_signed(verifier, keys):
    c = greet(verifier.port, HELO)
    forged = make("ceo@strict.test", "forged")
    assert send(c, "bounce@pass.test", forged) == (550, "5.7.1 Rejected by the DMARC policy of strict.test")
    signed = dkimpy_sign(forged, keys["strict"], "strict.test", "s1")
    ar = auth_results(spooled(verifier, send(c, "bounce@pass.test", signed)))
    assert method(ar, "dmarc") == ["pass"] and method(ar, "dkim") == ["pass"], ar
    assert "header.from=strict.test" in ar
    c.close()


def pyspf_result(dns_port: int, ip: str, sender: str) -> str:
    import dns.resolver  # type: ignore
    import spf  # type: ignore

    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = dns_port
    dns.resolver.default_resolver = res
    return spf.check2(i=ip, s=sender, h=HELO)[0]


# Clients other than loopback (hickory answers 127.0.0.0/8 and ::1 reverse
# look-ups itself, RFC 6761), through `postern spf` on the same DNS server:
# (ip, sender, expected). The zone is ELSEWHERE below.
ELSEWHERE_SPF = {
    "ptr.test": "v=spf1 ptr -all",
    "ptr-named.test": "v=spf1 ptr:ptr-named.test -all",
    "ptr-macro.test": "v=spf1 exists:%{p}.ok.ptr-macro.test -all",
    "void-mx.test": "v=spf1 mx:none1.void.test mx:none2.void.test mx:none3.void.test +all",
    "void-mix.test": "v=spf1 a:v1.void.test mx:none1.void.test ip4:192.0.2.10 -all",
    "void-ptr.test": "v=spf1 a:v1.void.test a:v2.void.test ptr -all",
    "six.test": "v=spf1 a:six.six.test -all",
    "six-void.test": "v=spf1 a:v1.void.test a:v2.void.test a:v3.void.test ip6:2001:db8::/32 -all",
}
ELSEWHERE_CASES = [
    ("192.0.2.10", "u@ptr.test", "pass"),  # PTR mail.ptr.test, whose A is the client
    ("192.0.2.11", "u@ptr.test", "fail"),  # PTR points at a name without that address
    ("192.0.2.12", "u@ptr.test", "fail"),  # no PTR at all
    ("192.0.2.10", "u@ptr-named.test", "fail"),  # validated name outside ptr-named.test
    ("192.0.2.13", "u@ptr-named.test", "pass"),
    ("192.0.2.10", "u@void-mx.test", "permerror"),  # three MX look-ups find nothing
    ("192.0.2.10", "u@void-mix.test", "pass"),  # two voids, then a match
    ("192.0.2.12", "u@void-ptr.test", "permerror"),  # the third void is the PTR
    ("2001:db8::6", "u@six.test", "pass"),
    ("2001:db8::7", "u@six.test", "fail"),
    ("2001:db8::6", "u@six-void.test", "permerror"),  # voids before the match
]


def elsewhere_zone(dns) -> None:
    for d, rec in ELSEWHERE_SPF.items():
        dns.add(d, "TXT", [rec])
    dns.add("10.2.0.192.in-addr.arpa", "PTR", ["mail.ptr.test"])
    dns.add("mail.ptr.test", "A", ["192.0.2.10"])
    dns.add("11.2.0.192.in-addr.arpa", "PTR", ["liar.ptr.test"])
    dns.add("liar.ptr.test", "A", ["192.0.2.99"])
    dns.add("13.2.0.192.in-addr.arpa", "PTR", ["mx.ptr-named.test"])
    dns.add("mx.ptr-named.test", "A", ["192.0.2.13"])
    dns.add("mail.ptr.test.ok.ptr-macro.test", "A", ["127.0.0.2"])
    dns.add("six.six.test", "AAAA", ["2001:db8::6"])


def spf_cli(cfg, ip: str, sender: str = "") -> list[str]:
    """`postern spf` for one client: its output lines (it must succeed)."""
    args = [str(BIN), "spf", "--config", str(cfg), "--ip", ip, "--helo", HELO]
    if sender:
        args += ["--mail-from", sender]
    run = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_spf_for_other_client_addresses_matches_pyspf(tmp_path, dns):
    """ptr, %{p}, IPv6 and the void-look-up limit, by `postern spf`."""
    elsewhere_zone(dns)
    cfg = tmp_path / "spf.toml"
    cfg.write_text('[server]\nhostname = "mx.test"\nlocal_domains = ["mx.test"]\nlisten = ["127.0.0.1:0"]\n' + dns.config("2s"))
    mismatches = []
    for ip, sender, want in ELSEWHERE_CASES:
        out = spf_cli(cfg, ip, sender)
        got = re.match(r"mail-from: (\w+)", out[0])
        got = got.group(1) if got else out
        ref = pyspf_result(dns.port, ip, sender)
        if (got, ref) != (want, want):
            mismatches.append((ip, sender, want, got, ref))
    assert not mismatches, mismatches
    # Known deviation (mail-auth 0.13): %{p} (which RFC 7208 §7.3 says not to
    # use) expands to the PTR name with its trailing dot, so the expanded
    # name is not a valid name and the result is temperror where pyspf finds
    # pass / fail. Asserted so a fixed library shows.
    for ip, want in (("192.0.2.10", "pass"), ("192.0.2.12", "fail")):
        out = spf_cli(cfg, ip, "u@ptr-macro.test")
        assert out[0].startswith("mail-from: temperror"), out
        assert pyspf_result(dns.port, ip, "u@ptr-macro.test") == want
    # The HELO identity is printed too.
    out = spf_cli(cfg, "127.0.0.1")
    assert out == ["mail-from: pass (client.test)", "helo: pass (client.test)"], out


def test_spf_and_dmarc_table_matches_pyspf(verifier, dns):
    c = greet(verifier.port, HELO)
    mismatches = []
    for case, sender in SPF_SENDERS.items():
        want = "fail" if case == "macro-l-bob" else SPF[case][1]
        ar = auth_results(spooled(verifier, send(c, sender, make(sender, case))))
        got = method(ar, "spf")
        ref = pyspf_result(dns.port, "127.0.0.1", sender)
        if got != [want] or ref != want:
            mismatches.append((case, want, got, ref))
    # The null sender: the HELO identity (RFC 7208 §2.4).
    ar = auth_results(spooled(verifier, send(c, "", make("x@client.test", "null"))))
    assert "spf=pass smtp.helo=client.test" in ar, ar
    for from_domain, mail_from, code, dmarc, quarantined in DMARC_CASES:
        reply = send(c, mail_from, make(f"x@{from_domain}", f"dmarc {from_domain}"))
        if code != 250:
            assert reply[0] == code, (from_domain, reply)
            continue
        msg = spooled(verifier, reply)
        if method(auth_results(msg), "dmarc") != [dmarc] or \
                bool(header_values(msg, "X-Postern-Quarantine")) != quarantined:
            mismatches.append((from_domain, dmarc, auth_results(msg), quarantined))
    # RFC 7208 §4.6.4: a third void look-up is a permerror (void2.test,
    # with two, passes above).
    ar = auth_results(spooled(verifier, send(c, "u@void.test", make("u@void.test", "void"))))
    assert (method(ar, "spf"), pyspf_result(dns.port, "127.0.0.1", "u@void.test")) == (["permerror"], "permerror")
    c.close()
    assert not mismatches, mismatches
    assert len(SPF_SENDERS) + len(DMARC_CASES) >= 30
    # Per-result counters (the whole module's traffic so far, at least this test's).
    rec = verifier.wait_log(lambda r: r.get("message") == "metrics listening")
    with urllib.request.urlopen(f"http://{rec['address']}/metrics", timeout=10) as r:
        text = r.read().decode()
    counts = {(m, res): float(v) for m, res, v in re.findall(
        r'^postern_mail_auth_total\{method="(\w+)",result="(\w+)"\} (\S+)$', text, re.M)}
    for key in (("spf", "pass"), ("spf", "fail"), ("spf", "permerror"), ("spf", "temperror"),
                ("dmarc", "pass"), ("dmarc", "fail"), ("dmarc", "none"), ("dkim", "none"), ("arc", "none")):
        assert counts.get(key, 0) >= 1, (key, counts)


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_spf_over_ipv6(tmp_path, dns):
    extra = dns.config("2s")
    with Server(tmp_path, [mail_auth()], extra=extra, listen=["[::1]:0"]) as srv:
        c = Raw(srv.port, host="::1")
        assert c.reply()[0] == 220 and c.cmd(f"EHLO {HELO}")[0] == 250
        for d, want in (("ip6-loop.test", "pass"), ("ip6.test", "fail"), ("cidr.test", "fail")):
            ar = auth_results(spooled(srv, send(c, f"u@{d}", make(f"u@{d}", d))))
            assert method(ar, "spf") == [want], (d, ar)
            assert pyspf_result(dns.port, "::1", f"u@{d}") == want
        c.close()


def test_dmarc_quarantine_holds_the_message(tmp_path, dns):
    """dmarc.quarantine = "hold": a message failing a p=quarantine policy is
    accepted, tagged and held in the queue (contract 0.2's quarantine) with
    the reason; a passing one is not held."""
    cfg = {"dmarc": {"quarantine": "hold"}}
    with Server(tmp_path, [mail_auth(cfg)], extra=dns.config("2s")) as srv:
        c = greet(srv.port, HELO)
        held = queue_id(send(c, "user@pass.test", make("x@quar.test", "held"))[1])
        free = queue_id(send(c, "user@pass.test", make("x@pass.test", "free"))[1])
        c.close()
        run = subprocess.run([str(BIN), "queue", "list", "--quarantined", "--config", str(srv.config_path)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert held in run.stdout and "quarantined: DMARC policy of quar.test" in run.stdout, run.stdout
        assert free not in run.stdout, run.stdout
        assert header_values(srv.read_queued(held)[1], "X-Postern-Quarantine") == ["DMARC policy of quar.test"]


def test_hold_is_refused_by_a_contract_0_1_build(tmp_path):
    """The 0.1 build of the same plugin cannot quarantine: `postern check`
    names the plugin and the setting instead of a trap on the first message."""
    v01 = TARGET / "contract-0.1" / "wasm32-wasip2" / "release" / "mail_auth_policy.wasm"
    assert v01.exists(), "build the 0.1 plugins: make rust-plugins-v01"
    text = render_config({"hostname": "mx.test", "listen": ["127.0.0.1:2525"],
                          "local_domains": ["example.test"], "allow_root": True},
                         [{"name": "mail-auth", "path": str(v01), "capabilities": ["mail-auth"],
                           "config": {"dmarc": {"quarantine": "hold"}}}])
    cfg = tmp_path / "postern.toml"
    cfg.write_text(text)
    r = subprocess.run([str(BIN), "check", "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r
    assert "mail-auth" in r.stderr and 'dmarc.quarantine = "hold" needs postern:policy@0.2.0' in r.stderr, r.stderr


def test_spf_actions_at_mail_from(tmp_path, dns):
    cfg = {"spf": {"fail": "reject", "softfail": "tag", "temperror": "defer", "permerror": "reject"}}
    with Server(tmp_path, [mail_auth(cfg)], extra=dns.config("2s")) as srv:
        c = greet(srv.port, HELO)
        code, text = c.cmd("MAIL FROM:<u@exp.test>")
        assert (code, text) == (550, "5.7.23 SPF fail for exp.test: 127.0.0.1 is not one of exp.test's servers")
        assert c.cmd("MAIL FROM:<u@broken.test>")[:1] == (451,)
        assert c.cmd("MAIL FROM:<u@syntax.test>")[0] == 550
        assert c.cmd("MAIL FROM:<u@softfail.test>")[0] == 250
        c.close()


def test_forged_authentication_results_are_removed(verifier):
    c = greet(verifier.port, HELO)
    extra = ("Authentication-Results: mx.example.test; dkim=pass header.d=bank.test\r\n"
             "Authentication-Results: elsewhere.test; spf=pass\r\n")
    msg = make("a@pass.test", "forged A-R").replace(b"\r\n\r\n", ("\r\n" + extra + "\r\n").encode(), 1)
    body = spooled(verifier, send(c, "a@pass.test", msg))
    values = header_values(body, "Authentication-Results")
    assert len(values) == 2, values
    assert values[0].startswith("mx.example.test; spf=pass") and "bank.test" not in values[0]
    assert values[1] == "elsewhere.test; spf=pass"
    c.close()


def keygen(domain: str, selector: str, algorithm: str, dir) -> str:
    r = subprocess.run([str(BIN), "dkim", "keygen", "--domain", domain, "--selector", selector,
                        "--algorithm", algorithm, "--dir", str(dir)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{selector}._domainkey.{domain}. IN TXT ")
    return "".join(re.findall(r'"([^"]*)"', r.stdout))


def test_postern_signs_and_dkimpy_and_opendkim_verify(tmp_path, dns):
    import dkim  # type: ignore

    keydir = tmp_path / "dkim"
    records = {
        "p1._domainkey.out-rsa.test": keygen("out-rsa.test", "p1", "rsa", keydir),
        "p2._domainkey.out-ed.test": keygen("out-ed.test", "p2", "ed25519", keydir),
    }
    outside = tmp_path / "outside.pem"
    outside.write_text((keydir / "out-rsa.test.p1.pem").read_text())
    cfg = {"sign": {"trusted_networks": ["127.0.0.1/32"], "domains": {
        "out-rsa.test": {"selector": "p1", "key_file": str(keydir / "out-rsa.test.p1.pem")},
        "out-ed.test": {"selector": "p2", "key_file": str(keydir / "out-ed.test.p2.pem"),
                        "algorithm": "ed25519-sha256"},
        "outside.test": {"selector": "p1", "key_file": str(outside)},
        "escape.test": {"selector": "p1", "key_file": str(keydir / ".." / "outside.pem")},
    }}}
    with Server(tmp_path / "srv", [mail_auth(cfg, files=[str(keydir)])], extra=dns.config("2s")) as srv:
        c = greet(srv.port, HELO)
        signed = {}
        for domain in ("out-rsa.test", "out-ed.test"):
            msg = spooled(srv, send(c, f"a@{domain}", make(f"a@{domain}", f"signed by {domain}")))
            assert len(header_values(msg, "DKIM-Signature")) == 1
            assert not header_values(msg, "Authentication-Results")  # outbound: signed, not judged
            signed[domain] = msg
        for domain in ("outside.test", "escape.test"):
            assert send(c, f"a@{domain}", make(f"a@{domain}", "x")) == (
                451, "4.3.0 Signing unavailable, try again later")
        c.close()

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return records.get(name.rstrip(".").lower(), "").encode() or None

    for domain, msg in signed.items():
        # Our Received field comes first, outside the signature.
        assert dkim.verify(msg, dnsfunc=dnsfunc), domain
        sig = header_values(msg, "DKIM-Signature")[0]
        h = re.search(r"h=([^;]+)", sig).group(1).replace(" ", "").lower().split(":")
        assert h.count("from") == 2 and h.count("subject") == 2 and "cc" in h, h  # oversigned
        assert not dkim.verify(msg.replace(b"Second line.", b"Second line!"), dnsfunc=dnsfunc)
    r = opendkim_verify(signed["out-rsa.test"], {k: chunks(v) for k, v in records.items()}, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "", (r.returncode, r.stdout, r.stderr)


def test_an_arc_sealed_message_is_judged_by_its_chain(verifier, keys):
    """A forwarder (dkimpy as the ARC sealer, RFC 8617) adds its
    Authentication-Results, ARC set and seal: arc=pass with one instance;
    a changed byte of the body breaks the chain."""
    import dkim  # type: ignore

    c = greet(verifier.port, HELO)
    original = make("a@signer.test", "via a list").replace(
        b"\r\n\r\n", b"\r\nAuthentication-Results: lists.signer.test; spf=pass smtp.mailfrom=signer.test\r\n\r\n", 1)
    sealed = b"".join(dkim.arc_sign(original, b"rsa", b"signer.test", keys["rsa"].private,
                                    b"lists.signer.test")) + original
    ours = lambda msg: header_values(msg, "Authentication-Results")[0]  # the forwarder's comes after
    ar = ours(spooled(verifier, send(c, "a@signer.test", sealed)))
    assert method(ar, "arc") == ["pass"] and "(i=1)" in ar, ar
    broken = sealed.replace(b"Second line.", b"Second line!")
    ar = ours(spooled(verifier, send(c, "a@signer.test", broken)))
    assert method(ar, "arc") == ["fail"], ar
    c.close()
