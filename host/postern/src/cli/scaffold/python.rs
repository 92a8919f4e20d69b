//! The Python template: app.py for componentize-py, its unittest on the
//! fake host (postern_testing.py, copied in), build.sh.

use std::fmt::Write as _;

use super::{ByStage, Plan};

/// Each stage's exports class, method, arguments and a test call's arguments.
fn stage(s: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    match s {
        "connect" => ("ConnectHook", "on_connect", "session", "pt.session()"),
        "helo" => (
            "HeloHook",
            "on_helo",
            "session, name, extended",
            "pt.session(), \"client.example\", True",
        ),
        "auth" => (
            "AuthHook",
            "on_auth",
            "session, credentials",
            "pt.session(), Credentials(mechanism=\"PLAIN\", authzid=None, username=\"u\", password=\"p\")",
        ),
        "rcpt-to" => (
            "RcptToHook",
            "on_rcpt_to",
            "session, recipient",
            "pt.session(), pt.address(\"someone@example.org\")",
        ),
        "data" => (
            "DataHook",
            "on_data",
            "session, message",
            "pt.session(), pt.message(\"Subject: hi\\n\\nhello\\n\")",
        ),
        "vrfy" => (
            "VrfyHook",
            "on_vrfy",
            "session, argument",
            "pt.session(), \"someone\"",
        ),
        "expn" => (
            "ExpnHook",
            "on_expn",
            "session, argument",
            "pt.session(), \"list\"",
        ),
        "outcome" => (
            "OutcomeHook",
            "on_outcomes",
            "session, outcomes",
            "pt.session(), []",
        ),
        other => unreachable!("stage {other} has its own template"),
    }
}

const EXAMPLE: &str = r#"
HOUR_MS = 3_600_000

# Per instance; set by `init`. It is the same for every session, so
# `Recycle` lets the host reuse the instance.
_config = {"blocked_domains": set(), "max_per_sender_per_hour": 0, "check_sender_domain": False}


def _reply(kind, code, enhanced, text):
    return kind(Reply(code=code, enhanced=enhanced, text=text))


class Init(exports.Init):
    def init(self, config: str) -> None:
        """`[plugin.config]` as JSON; raising Err refuses it (`postern check`
        shows the message)."""
        global _config
        settings = json.loads(config)
        unknown = set(settings) - set(_config)
        if unknown:
            raise Err(f"unknown key(s): {', '.join(sorted(unknown))}")
        blocked = settings.get("blocked_domains", [])
        if not isinstance(blocked, list) or not all(isinstance(d, str) and d and "@" not in d for d in blocked):
            raise Err("blocked_domains: a list of domain names")
        limit = settings.get("max_per_sender_per_hour", 0)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise Err("max_per_sender_per_hour: 0 (no limit) or more")
        check = settings.get("check_sender_domain", False)
        if not isinstance(check, bool):
            raise Err("check_sender_domain: true or false")
        _config = {
            "blocked_domains": {d.lower().rstrip(".") for d in blocked},
            "max_per_sender_per_hour": limit,
            "check_sender_domain": check,
        }


class MailFromHook(exports.MailFromHook):
    def on_mail_from(self, session, sender):
        """Blocked domains, a per-sender rate in kv, the sender domain in DNS.
        `sender.domain` is empty for the null sender <>, which passes."""
        domain = sender.domain.lower().rstrip(".")
        if not domain:
            return Verdict_Pass()
        if domain in _config["blocked_domains"]:
            log.log(log.Level.INFO, "sender refused", [("sender", sender.address)])
            return _reply(Verdict_Reject, 550, "5.7.1", "Sender domain refused by {{name}}")
        limit = _config["max_per_sender_per_hour"]
        if limit:
            try:
                count = kv.increment("sender:" + sender.address.lower(), 1, HOUR_MS)
            except Err as e:  # the store is down or the grant is missing: fail safe
                log.log(log.Level.WARN, "kv failed", [("error", repr(e.value))])
                return _reply(Verdict_Defer, 451, "4.3.0", "Temporary policy failure, try later")
            if count > limit:
                return _reply(Verdict_Defer, 451, "4.7.1", "Too many messages from this sender, try later")
        if _config["check_sender_domain"]:
            try:
                exists = _domain_exists(domain)
            except Err as e:
                log.log(log.Level.WARN, "dns failed", [("error", repr(e.value))])
                return _reply(Verdict_Defer, 451, "4.4.3", "Sender domain look-up failed, try later")
            if not exists:
                return _reply(Verdict_Reject, 550, "5.1.8", "Sender domain does not exist")
        return Verdict_Pass()


def _domain_exists(domain):
    """Whether the DNS knows `domain` as a mail domain: an MX, or else an A.
    Temporary trouble raises (Err)."""
    for lookup in (dns.lookup_mx, dns.lookup_a):
        try:
            lookup(domain)
            return True
        except Err as e:
            if isinstance(e.value, dns.DnsError_NxDomain):
                return False
            if not isinstance(e.value, dns.DnsError_NoRecords):
                raise
    return False
"#;

const PLAIN: &str = r#"

class Init(exports.Init):
    def init(self, config: str) -> None:
        """`[plugin.config]` as JSON; raising Err refuses it (`postern check`
        shows the message). Add your settings here."""
        unknown = set(json.loads(config))
        if unknown:
            raise Err(f"unknown key(s): {', '.join(sorted(unknown))}")
"#;

const EXAMPLE_TESTS: &str = r#"
    def mail_from(self, sender):
        return pt.verdict(self.app.MailFromHook().on_mail_from(pt.session(), pt.address(sender)))

    def test_configuration_is_checked(self):
        for bad in ({"blocked_domain": []}, {"blocked_domains": ["a@b"]}, {"max_per_sender_per_hour": -1}):
            with self.subTest(config=bad), self.assertRaises(Err):
                self.init(**bad)

    def test_blocked_domains_are_refused_and_logged(self):
        self.init(blocked_domains=["Spam.Example"])
        self.assertEqual(self.mail_from("x@spam.example")[:3], ("reject", 550, "5.7.1"))
        self.assertTrue(pt.host.logged("sender refused"))
        self.assertEqual(self.mail_from("x@ham.example")[0], "pass")
        self.assertEqual(self.mail_from("")[0], "pass")

    def test_senders_are_counted_in_kv_per_hour(self):
        self.init(max_per_sender_per_hour=2)
        self.assertEqual(self.mail_from("a@b.example")[0], "pass")
        self.assertEqual(self.mail_from("A@b.example")[0], "pass")
        self.assertEqual(self.mail_from("a@b.example")[2], "4.7.1")
        self.assertEqual(pt.host.kv["sender:a@b.example"][0], "3")
        pt.host.advance(3_600_000)
        self.assertEqual(self.mail_from("a@b.example")[0], "pass")
        pt.host.kv_fail = "unavailable"
        self.assertEqual(self.mail_from("a@b.example")[2], "4.3.0")

    def test_sender_domains_are_looked_up_in_dns(self):
        pt.host.dns.mx("mx.example", [(10, "mail.mx.example")])
        pt.host.dns.a("a-only.example", ["192.0.2.1"])
        self.init(check_sender_domain=True)
        self.assertEqual(self.mail_from("x@mx.example")[0], "pass")
        self.assertEqual(self.mail_from("x@a-only.example")[0], "pass")
        self.assertEqual(self.mail_from("x@nowhere.example")[2], "5.1.8")
        pt.host.dns_fail = "temporary"
        self.assertEqual(self.mail_from("x@mx.example")[1], 451)
"#;

/// What each stage's stub returns.
const STUB_RETURN: ByStage = ByStage {
    data: "DataResult(verdict=Verdict_Pass(), add_headers=[], header_changes=[], envelope_changes=[], quarantine=None)",
    outcome: "None",
    verdict: "Verdict_Pass()",
};

pub fn files(plan: &Plan) -> Vec<(String, String)> {
    let name = &plan.name;
    let mut imports = vec!["Reply", "Verdict_Pass"];
    if plan.example() {
        imports.extend(["Verdict_Defer", "Verdict_Reject"]);
    }
    if plan.stages.contains(&"data") {
        imports.push("DataResult");
    }
    imports.sort();
    let host_imports = if plan.example() {
        "dns, kv, log"
    } else {
        "log"
    };
    let mut app = format!(
        "\"\"\"{name}: a Postern policy plugin (stages: {stages}), made by\n\
         `postern plugin new`. Build: ./build.sh; test: python3 -m unittest. See\n\
         README.md. Built with componentize-py against wit/world.wit (world\n\
         `{name}`); the `wit_world` module is generated from it at build time.\n\
         Input: the session and arguments from the host; the operator's\n\
         configuration.\n\"\"\"\n\nimport json\n\n\
         from componentize_py_types import Err\nfrom wit_world import exports\n\
         from wit_world.imports import {host_imports}  # noqa: F401 (log: use it in your policy)\n\
         from wit_world.imports.types import {types}  # noqa: F401\n",
        stages = plan.stages.join(", "),
        types = imports.join(", "),
    );
    app.push_str(plan.pick(EXAMPLE, PLAIN));
    let mut tests = String::from(plan.pick(EXAMPLE_TESTS, ""));
    for s in plan.stub_stages() {
        let (class, method, args, call) = stage(s);
        let body = STUB_RETURN.get(s);
        let _ = write!(
            app,
            "\n\nclass {class}(exports.{class}):\n    def {method}(self, {args}):\n        \
             # Your policy for {s}: a pass leaves the decision to the next plugin.\n        \
             return {body}\n"
        );
        let check = if *s == "outcome" {
            format!("self.assertIsNone(self.app.{class}().{method}({call}))")
        } else {
            format!(
                "self.assertEqual(pt.verdict(self.app.{class}().{method}({call}))[0], \"pass\")"
            )
        };
        let _ = write!(
            tests,
            "\n    def test_{snake}_passes(self):\n        self.init()\n        {check}\n",
            snake = Plan::snake(s)
        );
    }
    app.push_str(
        "\n\nclass Recycle(exports.Recycle):\n    def recycle(self) -> bool:\n        \
         \"\"\"The module keeps nothing of a session: the host may reuse it.\"\"\"\n        \
         return True\n",
    );
    let app = app.replace("{{name}}", name);
    let test = format!(
        "\"\"\"Unit tests of {name} on the fake host (postern_testing.py, written\n\
         next to it by `postern plugin new`); plain CPython, no wasm toolchain:\n\
         `python3 -m unittest`.\n\"\"\"\n\nimport json\nimport unittest\nfrom pathlib import Path\n\n\
         import postern_testing as pt  # first: installs the wit_world stand-ins app.py imports\n\
         from componentize_py_types import Err  # noqa: E402\n\
         from wit_world.imports.types import Credentials  # noqa: E402,F401\n\n\
         HERE = Path(__file__).resolve().parent\n\n\n\
         class PluginTest(unittest.TestCase):\n    def setUp(self):\n        pt.host.reset()\n        \
         # A fresh module for every test, as the host gives every session a\n        \
         # fresh instance.\n        self.app = pt.load_plugin(HERE / \"app.py\")\n\n    \
         def init(self, **config):\n        self.app.Init().init(json.dumps(config))\n{tests}\n\n\
         if __name__ == \"__main__\":\n    unittest.main()\n"
    );
    let mut files = vec![
        ("app.py".into(), app),
        ("test_app.py".into(), test),
        (
            "postern_testing.py".into(),
            super::py_fake_host().to_string(),
        ),
    ];
    files.extend(plan.component_files(
        super::Lang::Python,
        BUILD,
        "python3 -m unittest",
        "/target/\n/.tools/\n__pycache__/\n",
    ));
    files
}

const BUILD: &str = r#"#!/usr/bin/env bash
# Build {{name}} into a WebAssembly component with componentize-py 0.25.1.
#   Inside a Postern checkout: <checkout>/target/plugins/{{name}}.wasm, with
#     the componentize-py the checkout pins (plugins/build-lib.sh) and the
#     WIT in wit/deps/ refreshed from the checkout's wit/ (`make build` runs
#     this script for every plugins/*/build.sh).
#   Elsewhere: target/{{name}}.wasm here, with $COMPONENTIZE_PY, or the
#     componentize-py on PATH, or one installed into .tools/ here on first
#     use; the WIT in wit/deps/ is what `postern plugin new` wrote.
# OUT=path chooses the output; FORCE=1 rebuilds an up-to-date component.
{{find_checkout}}inputs=("$here/app.py" "$here/wit/world.wit" "$here/build.sh")
if [ "$root" != / ]; then
    . "$root/plugins/build-lib.sh"
    out="${OUT:-$root/target/plugins/$PLUGIN.wasm}"
    tool="${COMPONENTIZE_PY:-$(postern_componentize_py "$root")}"
    postern_wit_deps "$here" "$root"
    inputs+=("$root"/wit/*.wit)
else
    out="${OUT:-$here/target/$PLUGIN.wasm}"
    tool="${COMPONENTIZE_PY:-$(command -v componentize-py || true)}"
    if [ -z "$tool" ]; then
        tool="$here/.tools/bin/componentize-py"
        if [ ! -x "$tool" ]; then
            echo "$PLUGIN: installing componentize-py 0.25.1 into $here/.tools" >&2
            python3 -m venv "$here/.tools"
            "$here/.tools/bin/python3" -m pip install --quiet componentize-py==0.25.1
        fi
    fi
    inputs+=("$here"/wit/deps/postern-policy/*.wit)
fi
{{skip_if_fresh}}# Only app.py goes into the component (not the tests or the fake host).
src="$(mktemp -d)"
trap 'rm -rf "$src"; rm -f "$out.tmp.$$"' EXIT
cp "$here/app.py" "$src/"
mkdir -p "$(dirname "$out")"
(cd "$src" && unset VIRTUAL_ENV && "$tool" -q -d "$here/wit" -w {{name}} componentize -p "$src" app -o "$out.tmp.$$")
mv -f "$out.tmp.$$" "$out"
echo "$PLUGIN: wrote $out ($(wc -c <"$out") bytes)" >&2
"#;
