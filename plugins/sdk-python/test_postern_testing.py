"""Tests of the fake Postern host (postern_testing.py); plain CPython:
`cd plugins/sdk-python && python3 -m unittest discover -p 'test_*.py'`.

The drift test generates the real componentize-py bindings (world
`all-stages` of wit/worlds.wit) when componentize-py is installed
(`$COMPONENTIZE_PY`, else <repo>/.tools/py/bin/componentize-py) and checks
that the stand-in modules define every public name they define; it is
skipped, saying why, when the tool or the WIT files are absent.
"""

import ast
import dataclasses
import enum
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import postern_testing as pt
from componentize_py_types import Err
from wit_world.imports import clock, dns, kv, log, mail_auth, types

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class KvTest(unittest.TestCase):
    def setUp(self):
        pt.host.reset()

    def test_ttl_expires_with_the_clock(self):
        kv.set("k", "v", 1000)
        self.assertEqual(kv.get("k"), "v")
        pt.host.advance(999)
        self.assertEqual(kv.get("k"), "v")
        pt.host.advance(1)
        self.assertIsNone(kv.get("k"))
        kv.set("forever", "v", None)
        pt.host.advance(10**12)
        self.assertEqual(kv.get("forever"), "v")

    def test_clock_is_settable(self):
        pt.host.now_ms = 5
        self.assertEqual(clock.now_ms(), 5)
        pt.host.advance(7)
        self.assertEqual(clock.now_ms(), 12)

    def test_increment_fixed_window(self):
        self.assertEqual(kv.increment("n", 1, 60_000), 1)
        pt.host.advance(30_000)
        self.assertEqual(kv.increment("n", 2, 60_000), 3)
        # The window runs from the first increment, not the last.
        pt.host.advance(29_999)
        self.assertEqual(kv.increment("n", 1, 60_000), 4)
        pt.host.advance(1)
        self.assertIsNone(kv.get("n"))
        self.assertEqual(kv.increment("n", 5, 60_000), 5)
        self.assertEqual(kv.get("n"), "5")
        self.assertEqual(kv.increment("n", -7, 60_000), -2)

    def test_increment_of_a_plain_value(self):
        kv.set("text", "abc", None)
        self.assertEqual(kv.increment("text", 2, 1000), 2)
        pt.host.advance(10**9)
        self.assertEqual(kv.get("text"), "2")  # keeps the entry's (absent) expiry

    def test_set_if_absent_and_delete(self):
        self.assertTrue(kv.set_if_absent("k", "a", 100))
        self.assertFalse(kv.set_if_absent("k", "b", 100))
        self.assertEqual(kv.get("k"), "a")
        pt.host.advance(100)
        self.assertTrue(kv.set_if_absent("k", "c", None))
        self.assertTrue(kv.delete("k"))
        self.assertFalse(kv.delete("k"))
        kv.set("gone", "x", 0)  # a zero TTL lives 1 ms
        self.assertEqual(kv.get("gone"), "x")
        pt.host.advance(1)
        self.assertFalse(kv.delete("gone"))

    def test_failure_injection(self):
        pt.host.kv_fail = "unavailable"
        with self.assertRaises(Err) as caught:
            kv.get("k")
        self.assertIsInstance(caught.exception.value, kv.KvError_Unavailable)
        pt.host.kv_fail = ("unavailable", "redis down")
        with self.assertRaises(Err) as caught:
            kv.set("k", "v", None)
        self.assertEqual(caught.exception.value, kv.KvError_Unavailable("redis down"))
        pt.host.kv_fail = "denied"
        with self.assertRaises(Err) as caught:
            kv.increment("k", 1, 10)
        self.assertEqual(caught.exception.value, kv.KvError_Denied())
        pt.host.kv_fail = None
        self.assertIsNone(kv.get("k"))

    def test_grants_and_invalid_keys(self):
        pt.host.grant("dns")
        with self.assertRaises(Err) as caught:
            kv.get("k")
        self.assertEqual(caught.exception.value, kv.KvError_Denied())
        pt.host.reset()
        with self.assertRaises(Err) as caught:
            kv.get("")
        self.assertIsInstance(caught.exception.value, kv.KvError_Invalid)
        with self.assertRaises(Err):
            kv.set("k", "x" * (64 * 1024 + 1), None)


class DnsTest(unittest.TestCase):
    def setUp(self):
        pt.host.reset()

    def test_scripted_answers(self):
        pt.host.dns.a("mx.example.org", ["192.0.2.1"]).aaaa("mx.example.org", ["2001:db8::1"])
        pt.host.dns.mx("example.org", [(20, "b.example.org"), (10, "a.example.org")])
        pt.host.dns.txt("example.org", ["v=spf1 -all"]).ptr("192.0.2.1", ["mx.example.org"])
        self.assertEqual(dns.lookup_a("MX.example.org."), ["192.0.2.1"])
        self.assertEqual(dns.lookup_aaaa("mx.example.org"), ["2001:db8::1"])
        self.assertEqual(dns.lookup_mx("example.org"),
                         [dns.Mx(10, "a.example.org"), dns.Mx(20, "b.example.org")])
        self.assertEqual(dns.lookup_txt("example.org"), ["v=spf1 -all"])
        self.assertEqual(dns.lookup_ptr("192.0.2.1"), ["mx.example.org"])
        self.assertEqual(pt.host.dns_queries[0], ("a", "MX.example.org."))
        self.assertEqual(len(pt.host.dns_queries), 5)

    def test_nx_default_no_records_and_errors(self):
        pt.host.dns.a("example.org", ["192.0.2.1"])
        with self.assertRaises(Err) as caught:
            dns.lookup_a("unknown.example")
        self.assertEqual(caught.exception.value, dns.DnsError_NxDomain())
        with self.assertRaises(Err) as caught:
            dns.lookup_mx("example.org")
        self.assertEqual(caught.exception.value, dns.DnsError_NoRecords())
        pt.host.dns.error("slow.example", ("temporary", "timeout"))
        with self.assertRaises(Err) as caught:
            dns.lookup_txt("slow.example")
        self.assertEqual(caught.exception.value, dns.DnsError_Temporary("timeout"))
        pt.host.dns.error("example.org", "no-records", rtype="a")
        with self.assertRaises(Err) as caught:
            dns.lookup_a("example.org")
        self.assertEqual(caught.exception.value, dns.DnsError_NoRecords())
        with self.assertRaises(Err) as caught:
            dns.lookup_ptr("not an ip")
        self.assertIsInstance(caught.exception.value, dns.DnsError_Invalid)

    def test_failure_injection_and_grants(self):
        pt.host.dns.a("example.org", ["192.0.2.1"])
        pt.host.dns_fail = "temporary"
        with self.assertRaises(Err) as caught:
            dns.lookup_a("example.org")
        self.assertIsInstance(caught.exception.value, dns.DnsError_Temporary)
        pt.host.dns_fail = None
        pt.host.grant("kv")
        with self.assertRaises(Err) as caught:
            dns.lookup_a("example.org")
        self.assertEqual(caught.exception.value, dns.DnsError_Denied())


class LogAndMailAuthTest(unittest.TestCase):
    def setUp(self):
        pt.host.reset()

    def test_log_capture(self):
        log.log(log.Level.WARN, "sender refused", [("sender", "a@b")])
        self.assertEqual(pt.host.logs, [(log.Level.WARN, "sender refused", [("sender", "a@b")])])
        self.assertTrue(pt.host.logged("refused"))
        self.assertTrue(pt.host.logged("refused", log.Level.WARN))
        self.assertFalse(pt.host.logged("refused", log.Level.INFO))
        self.assertFalse(pt.host.logged("accepted"))

    def test_mail_auth_default_scripted_and_denied(self):
        out = mail_auth.check_spf("192.0.2.1", "mx.example.org", "a@example.net")
        self.assertEqual(out.mail_from.domain, "example.net")
        self.assertEqual(out.helo.result, mail_auth.AuthResult.NONE)
        pt.host.mail_auth["check_spf"] = lambda ip, helo, sender: "scripted"
        self.assertEqual(mail_auth.check_spf("192.0.2.1", "h", ""), "scripted")
        pt.host.grant()
        with self.assertRaises(Err) as caught:
            mail_auth.check_spf("192.0.2.1", "h", "")
        self.assertEqual(caught.exception.value, mail_auth.MailAuthError_Denied())


class BuildersTest(unittest.TestCase):
    def test_session_defaults_and_values(self):
        s = pt.session()
        self.assertIsInstance(s, types.Session)
        self.assertEqual((s.id(), s.client_ip(), s.client_port()), ("s1", "192.0.2.1", 40000))
        self.assertEqual((s.local_ip(), s.local_port(), s.listener(), s.server_name()),
                         ("192.0.2.25", 25, "smtp", "mx.example.org"))
        self.assertIsNone(s.helo())
        self.assertFalse(s.esmtp())
        self.assertIsNone(s.tls())
        self.assertEqual(s.recipients(), [])
        s = pt.session(helo="client.example", tls=True, mail_from="a@b.example",
                       recipients=["x@mx.example.org", "y@mx.example.org"], auth_user="jane")
        self.assertTrue(s.esmtp())
        self.assertEqual(s.tls().protocol, "TLSv1.3")
        self.assertEqual(s.mail_from().domain, "b.example")
        self.assertEqual(s.recipient_count(), 2)
        self.assertEqual(s.auth_user(), "jane")

    def test_address_split(self):
        a = pt.address('"odd@local"@example.org', local=True, params=["SIZE=100", "smtputf8"])
        self.assertEqual((a.local_part, a.domain, a.is_local), ('"odd@local"', "example.org", True))
        self.assertEqual(a.params, [types.EsmtpParam("SIZE", "100"), types.EsmtpParam("SMTPUTF8", None)])
        null = pt.address("<>")
        self.assertEqual((null.address, null.local_part, null.domain), ("", "", ""))
        pm = pt.address("Postmaster")
        self.assertEqual((pm.domain, pm.is_local), ("", True))

    def test_message_accessors(self):
        m = pt.message("Subject: hello\n world\nFrom: a@b\nX-Empty:\nsubject: again\n\nbody\n")
        self.assertEqual(m.header("SUBJECT"), "hello world")
        self.assertEqual(m.header_all("subject"), ["hello world", "again"])
        self.assertEqual(m.header("x-empty"), "")
        self.assertIsNone(m.header("missing"))
        self.assertEqual([h.name for h in m.headers()], ["Subject", "From", "X-Empty", "subject"])
        self.assertEqual(m.body_size(), 6)
        self.assertEqual(m.read_body(0, 100), b"body\r\n")
        self.assertEqual(m.read_body(2, 2), b"dy")
        self.assertEqual(m.read_body(100, 10), b"")
        self.assertEqual(m.read(0, 9), b"Subject: ")
        raw = b"Subject: hello\r\n world\r\nFrom: a@b\r\nX-Empty:\r\nsubject: again\r\n\r\nbody\r\n"
        self.assertEqual(m.size(), len(raw))
        self.assertEqual(m.read(0, 1000), raw)

    def test_message_header_section_ends_at_non_field_line(self):
        m = pt.message(b"A: 1\r\nnot a header\r\nB: 2\r\n", crlf=False)
        self.assertEqual(len(m.headers()), 1)
        self.assertEqual(m.read_body(0, 100), b"not a header\r\nB: 2\r\n")

    def test_verdict(self):
        self.assertEqual(pt.verdict(types.Verdict_Pass()), ("pass", None, None, None))
        reply = types.Reply(code=450, enhanced="4.7.1", text="later")
        self.assertEqual(pt.verdict(types.Verdict_Defer(reply)), ("defer", 450, "4.7.1", "later"))
        result = types.DataResult(types.Verdict_AcceptWith(types.Reply(250, None, "ok")), [], [], [], None)
        self.assertEqual(pt.verdict(result), ("accept-with", 250, None, "ok"))


def _componentize_py():
    tool = os.environ.get("COMPONENTIZE_PY") or str(REPO / ".tools/py/bin/componentize-py")
    return tool if os.path.isfile(tool) and os.access(tool, os.X_OK) else None


def _real_names(path):
    """Public names a generated module defines: {name: kind-specific detail}."""
    tree = ast.parse(path.read_text())
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(b) for b in node.bases}
            decorators = {ast.unparse(d) for d in node.decorator_list}
            members = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members[item.name] = ("method", [a.arg for a in item.args.args])
                elif isinstance(item, ast.AnnAssign):
                    members[item.target.id] = ("field", None)
                elif isinstance(item, ast.Assign):
                    for target in item.targets:
                        members[target.id] = ("enum", ast.literal_eval(item.value))
            kind = ("enum" if "Enum" in bases else
                    "dataclass" if any(d.startswith("dataclass") for d in decorators) else "class")
            names[node.name] = ("class", kind, members)
        elif isinstance(node, ast.FunctionDef):
            names[node.name] = ("function", [a.arg for a in node.args.args])
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names[target.id] = ("alias",)
    return names


class DriftTest(unittest.TestCase):
    """Every public name of the real generated bindings exists in the stubs."""

    def test_stubs_cover_the_generated_bindings(self):
        tool = _componentize_py()
        if tool is None:
            self.skipTest("componentize-py not installed (set COMPONENTIZE_PY or run "
                          "examples/plugins/python/build.sh once)")
        wit = REPO / "wit"
        if not (wit / "worlds.wit").is_file():
            self.skipTest(f"no WIT package at {wit} (outside the Postern repository)")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            deps = tmp / "wit/deps/postern-policy"
            deps.mkdir(parents=True)
            for f in wit.glob("*.wit"):
                shutil.copy(f, deps)
            (tmp / "wit/world.wit").write_text(
                "package drift:check;\n\nworld drift {\n"
                "    include postern:policy/all-stages@0.2.0;\n}\n")
            env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
            subprocess.run([tool, "-q", "-d", str(tmp / "wit"), "-w", "drift", "bindings",
                            str(tmp / "out")], check=True, env=env, capture_output=True)
            out = tmp / "out"
            files = [out / "componentize_py_types.py", *sorted((out / "wit_world").rglob("*.py"))]
            self.assertGreater(len(files), 20)
            for path in files:
                rel = path.relative_to(out).with_suffix("")
                parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
                module_name = ".".join(parts)
                with self.subTest(module=module_name):
                    self.assertIn(module_name, sys.modules, "module missing")
                    self._check_module(sys.modules[module_name], _real_names(path))

    def _check_module(self, stub, real):
        for name, info in real.items():
            self.assertTrue(hasattr(stub, name), f"{stub.__name__}.{name} missing")
            value = getattr(stub, name)
            if info[0] == "function":
                params = list(inspect.signature(value).parameters)
                self.assertEqual(params, info[1], f"{stub.__name__}.{name} parameters")
            elif info[0] == "class":
                _, kind, members = info
                self.assertIsInstance(value, type, f"{stub.__name__}.{name} is not a class")
                self._check_class(f"{stub.__name__}.{name}", value, kind, members)

    def _check_class(self, where, cls, kind, members):
        if kind == "dataclass":
            fields = [f.name for f in dataclasses.fields(cls)]
            expected = [m for m, (k, _) in members.items() if k == "field"]
            self.assertEqual(fields, expected, f"{where} fields")
        if kind == "enum":
            self.assertTrue(issubclass(cls, enum.Enum), f"{where} is not an Enum")
            expected = {m: v for m, (k, v) in members.items() if k == "enum"}
            self.assertEqual({m.name: m.value for m in cls}, expected, f"{where} members")
        for member, (k, params) in members.items():
            if k == "method":
                self.assertTrue(callable(getattr(cls, member, None)), f"{where}.{member} missing")
                if not member.startswith("__"):
                    got = list(inspect.signature(getattr(cls, member)).parameters)
                    self.assertEqual(got, params, f"{where}.{member} parameters")


if __name__ == "__main__":
    unittest.main()
