"""Unit tests of the example plugin (app.py) against the fake Postern host
of plugins/sdk-python/postern_testing.py; plain CPython, no wasm toolchain:
`cd examples/plugins/python && python3 -m unittest discover -p 'test_*.py'`.
"""

import json
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent.parent / "plugins" / "sdk-python"))

import postern_testing as pt  # noqa: E402  (installs `wit_world` before app.py needs it)
from componentize_py_types import Err  # noqa: E402
from wit_world.imports import log  # noqa: E402


class SenderBlocklistTest(unittest.TestCase):
    def setUp(self):
        pt.host.reset()
        # A fresh module for every test, as the host gives every session a
        # fresh instance.
        self.app = pt.load_plugin(HERE / "app.py")

    def init(self, config):
        self.app.Init().init(json.dumps(config))

    def mail_from(self, sender):
        return self.app.MailFromHook().on_mail_from(pt.session(), pt.address(sender))

    def test_init_refuses_unknown_keys(self):
        with self.assertRaises(Err) as caught:
            self.init({"blocked_domains": [], "typo": 1, "another": 2})
        self.assertEqual(caught.exception.value, "unknown key(s): another, typo")

    def test_init_refuses_bad_domains(self):
        for bad in ("spam.example", [""], [1], {"a": "b"}):
            with self.subTest(blocked_domains=bad), self.assertRaises(Err) as caught:
                self.init({"blocked_domains": bad})
            self.assertEqual(caught.exception.value, "blocked_domains: a list of domain names")

    def test_init_accepts_good_config(self):
        self.init({})
        self.init({"blocked_domains": ["spam.example", "Junk.Example."]})

    def test_blocked_sender_is_rejected_and_logged(self):
        self.init({"blocked_domains": ["spam.example", "Junk.Example."]})
        for sender in ("a@spam.example", "b@SPAM.example.", "c@junk.example"):
            with self.subTest(sender=sender):
                self.assertEqual(
                    pt.verdict(self.mail_from(sender)),
                    ("reject", 550, "5.7.1", f"<{sender}>: Sender domain refused by policy"))
        self.assertTrue(pt.host.logged("sender refused"))
        self.assertEqual(pt.host.logs[0], (log.Level.INFO, "sender refused", [("sender", "a@spam.example")]))

    def test_non_printable_sender_is_shown_safely(self):
        self.init({"blocked_domains": ["spam.example"]})
        _, _, _, text = pt.verdict(self.mail_from("jürgen@spam.example"))
        self.assertEqual(text, "<j?rgen@spam.example>: Sender domain refused by policy")

    def test_other_senders_and_null_sender_pass(self):
        self.init({"blocked_domains": ["spam.example"]})
        for sender in ("a@example.org", "a@sub.spam.example", "<>"):
            with self.subTest(sender=sender):
                self.assertEqual(pt.verdict(self.mail_from(sender)), ("pass", None, None, None))
        self.assertEqual(pt.host.logs, [])


if __name__ == "__main__":
    unittest.main()
