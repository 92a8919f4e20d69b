"""Unit tests of the greylisting logic; plain CPython, no wasm toolchain:
`cd plugins/greylist && python3 -m unittest`."""

import json
import unittest

import greylist_logic as g


class FakeKv:
    """In-memory kv with TTLs against a test clock, and failure injection."""

    def __init__(self):
        self.now = 0
        self.data = {}
        self.fail = None
        self.ttls = {}

    def _live(self, key):
        item = self.data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self.now:
            del self.data[key]
            return None
        return value

    def _check(self):
        if self.fail:
            raise g.KvFailure(self.fail)

    def get(self, key):
        self._check()
        return self._live(key)

    def set(self, key, value, ttl_ms):
        self._check()
        self.data[key] = (value, None if ttl_ms is None else self.now + ttl_ms)
        self.ttls[key] = ttl_ms

    def set_if_absent(self, key, value, ttl_ms):
        self._check()
        if self._live(key) is not None:
            return False
        self.set(key, value, ttl_ms)
        return True


def make(config=None):
    kv = FakeKv()
    logs = []
    gl = g.Greylist(
        g.parse_config(json.dumps(config or {})),
        kv,
        lambda level, msg, fields: logs.append((level, msg, dict(fields))),
    )
    return gl, kv, logs


DEFERRED_300 = ("defer", 451, "4.7.1", "Greylisted, please try again in 300 seconds")


class ConfigTests(unittest.TestCase):
    def test_defaults(self):
        c = g.parse_config("{}")
        self.assertEqual((c.delay, c.retry_window, c.pass_ttl), (300, 86400, 36 * 86400))
        self.assertTrue(c.skip_authenticated)
        self.assertEqual([str(n) for n in c.whitelist], ["127.0.0.0/8", "::1/128"])
        self.assertEqual(g.parse_config("").delay, 300)

    def test_values(self):
        c = g.parse_config(
            json.dumps(
                {
                    "delay": 1,
                    "retry_window": 60,
                    "pass_ttl": 3600,
                    "whitelist_networks": ["10.1.2.3/8", "2001:db8::/32"],
                    "skip_authenticated": False,
                }
            )
        )
        self.assertEqual((c.delay, c.retry_window, c.pass_ttl), (1, 60, 3600))
        self.assertEqual([str(n) for n in c.whitelist], ["10.0.0.0/8", "2001:db8::/32"])
        self.assertFalse(c.skip_authenticated)

    def test_unknown_keys_are_named(self):
        with self.assertRaises(g.ConfigError) as e:
            g.parse_config('{"delay": 5, "dealy": 5, "whitelist": []}')
        self.assertIn("dealy, whitelist", str(e.exception))

    def test_bad_values(self):
        for cfg, want in [
            ({"delay": "5"}, "delay"),
            ({"delay": True}, "delay"),
            ({"delay": -1}, "delay"),
            ({"delay": 1.5}, "delay"),
            ({"retry_window": 0}, "retry_window"),
            ({"pass_ttl": 0}, "pass_ttl"),
            ({"delay": 600, "retry_window": 600}, "retry_window"),
            ({"whitelist_networks": "127.0.0.1"}, "whitelist_networks"),
            ({"whitelist_networks": ["nonsense"]}, "nonsense"),
            ({"skip_authenticated": "yes"}, "skip_authenticated"),
        ]:
            with self.subTest(cfg=cfg):
                with self.assertRaises(g.ConfigError) as e:
                    g.parse_config(json.dumps(cfg))
                self.assertIn(want, str(e.exception))
        for text in ["[1]", "{nope", "3"]:
            with self.assertRaises(g.ConfigError):
                g.parse_config(text)


class NetworkTests(unittest.TestCase):
    def test_client_network(self):
        for ip, net in [
            ("192.0.2.7", "192.0.2.0/24"),
            ("192.0.2.250", "192.0.2.0/24"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:DB8::1", "2001:db8::/64"),
            ("::ffff:198.51.100.9", "198.51.100.0/24"),
            ("[2001:db8::1]", "2001:db8::/64"),
            ("not-an-ip", "not-an-ip"),
        ]:
            with self.subTest(ip=ip):
                self.assertEqual(g.client_network(ip), net)

    def test_whitelist(self):
        nets = g.parse_config("{}").whitelist
        self.assertTrue(g.is_whitelisted("127.0.0.1", nets))
        self.assertTrue(g.is_whitelisted("::1", nets))
        self.assertTrue(g.is_whitelisted("::ffff:127.0.0.2", nets))
        self.assertFalse(g.is_whitelisted("192.0.2.1", nets))
        self.assertFalse(g.is_whitelisted("::2", nets))
        self.assertFalse(g.is_whitelisted("garbage", nets))

    def test_key(self):
        self.assertEqual(
            g.triplet_key("192.0.2.0/24", "Alice@Example.ORG", "Bob@Example.NET"),
            "triplet:192.0.2.0/24|alice@example.org|bob@example.net",
        )
        self.assertEqual(g.triplet_key("192.0.2.0/24", "", "b@x"), "triplet:192.0.2.0/24||b@x")


class GreylistTests(unittest.TestCase):
    def test_first_sight_defers_then_retry_passes(self):
        gl, kv, logs = make()
        kv.now = 1_000_000
        self.assertEqual(gl.check("192.0.2.7", None, "a@x.org", "b@y.org", kv.now), DEFERRED_300)
        key = "triplet:192.0.2.0/24|a@x.org|b@y.org"
        self.assertEqual(kv.data[key][0], "1000000")
        self.assertEqual(kv.ttls[key], 86400 * 1000)
        self.assertEqual(logs[-1][0], "info")
        # An early retry from a neighbour in the same /24: remaining time.
        kv.now += 100_500
        self.assertEqual(
            gl.check("192.0.2.99", None, "A@X.org", "b@Y.org", kv.now),
            ("defer", 451, "4.7.1", "Greylisted, please try again in 200 seconds"),
        )
        # After the delay: pass (never accept) and remembered for pass_ttl.
        kv.now = 1_000_000 + 300_000
        self.assertEqual(gl.check("192.0.2.7", None, "a@x.org", "b@y.org", kv.now), g.PASS)
        self.assertEqual(kv.ttls[key], 36 * 86400 * 1000)
        self.assertEqual(kv.data[key][0], "1000000")
        # Long after the retry window, the known triplet still passes.
        kv.now += 10 * 86400 * 1000
        self.assertEqual(gl.check("192.0.2.7", None, "a@x.org", "b@y.org", kv.now), g.PASS)

    def test_retry_window_expiry_restarts(self):
        gl, kv, _ = make({"delay": 10, "retry_window": 60})
        self.assertEqual(gl.check("192.0.2.7", None, "a@x", "b@y", 0)[0], "defer")
        kv.now = 61_000
        self.assertEqual(
            gl.check("192.0.2.7", None, "a@x", "b@y", kv.now),
            ("defer", 451, "4.7.1", "Greylisted, please try again in 10 seconds"),
        )

    def test_triplet_parts_matter(self):
        gl, kv, _ = make({"delay": 1})
        self.assertEqual(gl.check("192.0.2.7", None, "", "b@y", 0)[0], "defer")
        kv.now = 2000
        self.assertEqual(gl.check("192.0.2.7", None, "", "b@y", kv.now), g.PASS)
        for ip, frm, to in [
            ("192.0.3.7", "", "b@y"),
            ("192.0.2.7", "a@x", "b@y"),
            ("192.0.2.7", "", "c@y"),
        ]:
            with self.subTest(ip=ip, frm=frm, to=to):
                self.assertEqual(gl.check(ip, None, frm, to, kv.now)[0], "defer")
        # IPv6: the /64 is one client.
        self.assertEqual(gl.check("2001:db8::1", None, "", "b@y", kv.now)[0], "defer")
        kv.now += 1000
        self.assertEqual(gl.check("2001:db8::ffff:2", None, "", "b@y", kv.now), g.PASS)

    def test_whitelisted_and_authenticated_skip_kv(self):
        gl, kv, _ = make({"whitelist_networks": ["198.51.100.0/24"]})
        kv.fail = "unreachable"
        self.assertEqual(gl.check("198.51.100.20", None, "a@x", "b@y", 0), g.PASS)
        self.assertEqual(gl.check("192.0.2.7", "alice", "a@x", "b@y", 0), g.PASS)
        # The whitelist replaced the default: loopback is greylisted now.
        self.assertEqual(gl.check("127.0.0.1", None, "a@x", "b@y", 0)[2:], ("4.7.1", g.UNAVAILABLE_TEXT))

    def test_authenticated_greylisted_when_not_skipped(self):
        gl, _, _ = make({"skip_authenticated": False})
        self.assertEqual(gl.check("192.0.2.7", "alice", "a@x", "b@y", 0), DEFERRED_300)

    KV_FAILURES = [
        (g.kv_failure("denied"), 'add capabilities = ["kv"]'),
        (g.kv_failure("unavailable", "no answer within 250ms"), "kv unavailable: no answer within 250ms"),
        (g.kv_failure("invalid", "key too long"), "kv invalid: key too long"),
    ]

    def _failing(self, config, failure):
        gl, kv, logs = make(config)
        kv.fail = str(failure)
        return gl, logs

    def test_kv_failure_defers_and_logs(self):
        for cfg in [{}, {"on_kv_error": "tempfail"}]:
            for failure, said in self.KV_FAILURES:
                with self.subTest(cfg=cfg, failure=str(failure)):
                    gl, logs = self._failing(cfg, failure)
                    self.assertEqual(
                        gl.check("192.0.2.7", None, "a@x", "b@y", 0),
                        ("defer", 451, "4.7.1", "Greylisting temporarily unavailable"),
                    )
                    self.assertEqual(logs[-1][:2], ("warn", "greylisting unavailable, deferring"))
                    self.assertIn(said, logs[-1][2]["error"])

    def test_kv_failure_with_on_kv_error_allow_passes(self):
        for failure, said in self.KV_FAILURES:
            with self.subTest(failure=str(failure)):
                gl, logs = self._failing({"on_kv_error": "allow"}, failure)
                # Every recipient, every retry: passed, never greylisted.
                for rcpt in ["b@y", "c@y", "b@y"]:
                    self.assertEqual(gl.check("192.0.2.7", None, "a@x", rcpt, 0), g.PASS)
                self.assertEqual(logs[-1][0], "warn")
                self.assertIn('passing (on_kv_error = "allow")', logs[-1][1])
                self.assertIn(said, logs[-1][2]["error"])

    def test_on_kv_error_values(self):
        self.assertEqual(g.parse_config("{}").on_kv_error, "tempfail")
        for value in ["tempfail", "allow"]:
            self.assertEqual(g.parse_config(json.dumps({"on_kv_error": value})).on_kv_error, value)
        for value in ["ignore", "Allow", True, None, ["allow"]]:
            with self.subTest(value=value):
                with self.assertRaises(g.ConfigError) as e:
                    g.parse_config(json.dumps({"on_kv_error": value}))
                self.assertIn('on_kv_error must be "tempfail" or "allow", got ', str(e.exception))

    def test_kv_failure_messages(self):
        self.assertEqual(
            str(g.kv_failure("denied")),
            'kv denied: capability not granted (add capabilities = ["kv"])',
        )
        self.assertEqual(str(g.kv_failure("unavailable", "down")), "kv unavailable: down")
        self.assertEqual(str(g.kv_failure("invalid")), "kv invalid")

    def test_zero_delay_passes_first_sight_and_remembers(self):
        gl, kv, _ = make({"delay": 0})
        self.assertEqual(gl.check("192.0.2.7", None, "a@x", "b@y", 5), g.PASS)
        self.assertEqual(kv.ttls["triplet:192.0.2.0/24|a@x|b@y"], 36 * 86400 * 1000)

    def test_garbage_value_is_a_first_sight(self):
        gl, kv, _ = make()
        kv.data["triplet:192.0.2.0/24|a@x|b@y"] = ("garbage", None)
        self.assertEqual(gl.check("192.0.2.7", None, "a@x", "b@y", 7), DEFERRED_300)
        self.assertEqual(kv.data["triplet:192.0.2.0/24|a@x|b@y"][0], "7")

    def test_lost_race_uses_the_winner(self):
        gl, kv, _ = make({"delay": 10})
        key = "triplet:192.0.2.0/24|a@x|b@y"
        real_get = kv.get
        calls = []

        def racing_get(k):
            calls.append(k)
            if len(calls) == 1:
                # Another session stores its first sight right after our get.
                kv.data[key] = ("1000", None)
                return None
            return real_get(k)

        kv.get = racing_get
        self.assertEqual(
            gl.check("192.0.2.7", None, "a@x", "b@y", 6000),
            ("defer", 451, "4.7.1", "Greylisted, please try again in 5 seconds"),
        )
        self.assertEqual(kv.data[key][0], "1000")


if __name__ == "__main__":
    unittest.main()
