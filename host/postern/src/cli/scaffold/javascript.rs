//! The JavaScript template: plugin.js for componentize-js, its node:test on
//! the fake host (postern-testing.mjs, copied in), build.mjs and build.sh.

use std::fmt::Write as _;

use super::{ByStage, Plan};

/// Each stage's export, method, arguments and a test call's arguments.
fn stage(s: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    match s {
        "connect" => ("connectHook", "onConnect", "session", "session()"),
        "helo" => (
            "heloHook",
            "onHelo",
            "session, name, extended",
            "session(), 'client.example', true",
        ),
        "auth" => (
            "authHook",
            "onAuth",
            "session, credentials",
            "session(), { mechanism: 'PLAIN', authzid: undefined, username: 'u', password: 'p' }",
        ),
        "rcpt-to" => (
            "rcptToHook",
            "onRcptTo",
            "session, recipient",
            "session(), address('someone@example.org')",
        ),
        "data" => (
            "dataHook",
            "onData",
            "session, message",
            "session(), message('Subject: hi\\r\\n\\r\\nhello\\r\\n')",
        ),
        "vrfy" => (
            "vrfyHook",
            "onVrfy",
            "session, argument",
            "session(), 'someone'",
        ),
        "expn" => (
            "expnHook",
            "onExpn",
            "session, argument",
            "session(), 'list'",
        ),
        "outcome" => (
            "outcomeHook",
            "onOutcomes",
            "session, outcomes",
            "session(), []",
        ),
        other => unreachable!("stage {other} has its own template"),
    }
}

const EXAMPLE: &str = r#"
import { log } from 'postern:policy/log@0.2.0';
import { increment } from 'postern:policy/kv@0.2.0';
import { lookupA, lookupMx } from 'postern:policy/dns@0.2.0';

const HOUR_MS = 3_600_000n;
const PASS = { tag: 'pass' };
const reply = (tag, code, enhanced, text) => ({ tag, val: { code, enhanced, text } });

// Per instance; set by `init`. It is the same for every session, so
// `recycle` lets the host reuse the instance.
let config = { blockedDomains: new Set(), maxPerSenderPerHour: 0n, checkSenderDomain: false };

export const init = {
  // `text` is `[plugin.config]` as JSON; an `err` refuses the configuration
  // (`postern check` shows the message).
  init(text) {
    const c = JSON.parse(text);
    const known = ['blocked_domains', 'max_per_sender_per_hour', 'check_sender_domain'];
    const unknown = Object.keys(c).filter((k) => !known.includes(k));
    if (unknown.length) return { tag: 'err', val: `unknown key(s): ${unknown.sort().join(', ')}` };
    const blocked = c.blocked_domains ?? [];
    if (!Array.isArray(blocked) || !blocked.every((d) => typeof d === 'string' && d && !d.includes('@'))) {
      return { tag: 'err', val: 'blocked_domains: a list of domain names' };
    }
    const limit = c.max_per_sender_per_hour ?? 0;
    if (!Number.isInteger(limit) || limit < 0) {
      return { tag: 'err', val: 'max_per_sender_per_hour: 0 (no limit) or more' };
    }
    const check = c.check_sender_domain ?? false;
    if (typeof check !== 'boolean') return { tag: 'err', val: 'check_sender_domain: true or false' };
    config = {
      blockedDomains: new Set(blocked.map((d) => d.toLowerCase().replace(/\.$/, ''))),
      maxPerSenderPerHour: BigInt(limit),
      checkSenderDomain: check,
    };
    return { tag: 'ok', val: undefined };
  },
};

export const mailFromHook = {
  // Blocked domains, a per-sender rate in kv, the sender domain in DNS.
  // `sender.domain` is empty for the null sender <>, which passes.
  onMailFrom(session, sender) {
    const domain = sender.domain.toLowerCase().replace(/\.$/, '');
    if (!domain) return PASS;
    if (config.blockedDomains.has(domain)) {
      log('info', 'sender refused', [['sender', sender.address]]);
      return reply('reject', 550, '5.7.1', 'Sender domain refused by {{name}}');
    }
    if (config.maxPerSenderPerHour > 0n) {
      let count;
      try {
        count = increment(`sender:${sender.address.toLowerCase()}`, 1n, HOUR_MS);
      } catch (e) {
        // The store is down or the grant is missing: fail safe.
        log('warn', 'kv failed', [['error', JSON.stringify(e.payload ?? String(e))]]);
        return reply('defer', 451, '4.3.0', 'Temporary policy failure, try later');
      }
      if (count > config.maxPerSenderPerHour) {
        return reply('defer', 451, '4.7.1', 'Too many messages from this sender, try later');
      }
    }
    if (config.checkSenderDomain) {
      let exists;
      try {
        exists = domainExists(domain);
      } catch (e) {
        log('warn', 'dns failed', [['error', JSON.stringify(e.payload ?? String(e))]]);
        return reply('defer', 451, '4.4.3', 'Sender domain look-up failed, try later');
      }
      if (!exists) return reply('reject', 550, '5.1.8', 'Sender domain does not exist');
    }
    return PASS;
  },
};

// Whether the DNS knows `domain` as a mail domain: an MX, or else an A.
// Temporary trouble throws.
function domainExists(domain) {
  for (const lookup of [lookupMx, lookupA]) {
    try {
      lookup(domain);
      return true;
    } catch (e) {
      if (e.payload?.tag === 'nx-domain') return false;
      if (e.payload?.tag !== 'no-records') throw e;
    }
  }
  return false;
}
"#;

const PLAIN: &str = r#"
import { log } from 'postern:policy/log@0.2.0';

const PASS = { tag: 'pass' };

export const init = {
  // `text` is `[plugin.config]` as JSON; an `err` refuses the configuration
  // (`postern check` shows the message). Add your settings here.
  init(text) {
    const unknown = Object.keys(JSON.parse(text));
    if (unknown.length) return { tag: 'err', val: `unknown key(s): ${unknown.sort().join(', ')}` };
    log('debug', 'configured', []);
    return { tag: 'ok', val: undefined };
  },
};
"#;

const EXAMPLE_TESTS: &str = r#"
const mailFrom = (sender) => verdict(plugin.mailFromHook.onMailFrom(session(), address(sender)));

test('the configuration is checked', () => {
  for (const bad of [{ blocked_domain: [] }, { blocked_domains: ['a@b'] }, { max_per_sender_per_hour: -1 }]) {
    assert.equal(init(bad).tag, 'err', JSON.stringify(bad));
  }
  assert.equal(init({}).tag, 'ok');
});

test('blocked domains are refused and logged', () => {
  init({ blocked_domains: ['Spam.Example'] });
  assert.deepEqual(mailFrom('x@spam.example').slice(0, 3), ['reject', 550, '5.7.1']);
  assert.ok(host.logged('sender refused'));
  assert.equal(mailFrom('x@ham.example')[0], 'pass');
  assert.equal(mailFrom('')[0], 'pass');
});

test('senders are counted in kv per hour', () => {
  init({ max_per_sender_per_hour: 2 });
  assert.equal(mailFrom('a@b.example')[0], 'pass');
  assert.equal(mailFrom('A@b.example')[0], 'pass');
  assert.equal(mailFrom('a@b.example')[2], '4.7.1');
  assert.equal(host.kv.get('sender:a@b.example').value, '3');
  host.advance(3_600_000);
  assert.equal(mailFrom('a@b.example')[0], 'pass');
  host.kvFail = 'unavailable';
  assert.equal(mailFrom('a@b.example')[2], '4.3.0');
});

test('sender domains are looked up in DNS', () => {
  host.dns.mx('mx.example', [[10, 'mail.mx.example']]);
  host.dns.a('a-only.example', ['192.0.2.1']);
  init({ check_sender_domain: true });
  assert.equal(mailFrom('x@mx.example')[0], 'pass');
  assert.equal(mailFrom('x@a-only.example')[0], 'pass');
  assert.equal(mailFrom('x@nowhere.example')[2], '5.1.8');
  host.dnsFail = 'temporary';
  assert.equal(mailFrom('x@mx.example')[1], 451);
});
"#;

/// The body of each stage's stub.
const STUB_BODY: ByStage = ByStage {
    data: "return { verdict: PASS, addHeaders: [], headerChanges: [], envelopeChanges: [], quarantine: undefined };",
    outcome: "// Observers return nothing; they see each transaction's outcomes.",
    verdict: "return PASS;",
};

pub fn files(plan: &Plan) -> Vec<(String, String)> {
    let name = &plan.name;
    let mut js = format!(
        "// {name}: a Postern policy plugin (stages: {stages}), made by\n\
         // `postern plugin new`. Build: ./build.sh; test: node --test. See README.md.\n\
         // Built with componentize-js against wit/world.wit (world `{name}`).\n\
         // Input: the session and arguments from the host; the operator's\n\
         // configuration.\n",
        stages = plan.stages.join(", "),
    );
    js.push_str(plan.pick(EXAMPLE, PLAIN));
    let mut tests = String::from(plan.pick(EXAMPLE_TESTS, ""));
    for s in plan.stub_stages() {
        let (export, method, args, call) = stage(s);
        let body = STUB_BODY.get(s);
        let _ = write!(
            js,
            "\nexport const {export} = {{\n  // Your policy for {s}: a pass leaves the decision to the next plugin.\n  \
             // eslint-disable-next-line no-unused-vars\n  {method}({args}) {{\n    {body}\n  }},\n}};\n"
        );
        let check = if *s == "outcome" {
            format!("assert.equal(plugin.{export}.{method}({call}), undefined);")
        } else {
            format!("assert.equal(verdict(plugin.{export}.{method}({call}))[0], 'pass');")
        };
        let _ = write!(
            tests,
            "\ntest('{s} passes', () => {{\n  assert.equal(init({{}}).tag, 'ok');\n  {check}\n}});\n"
        );
    }
    js.push_str(
        "\n// The module keeps nothing of a session: the host may reuse the instance.\n\
         export const recycle = {\n  recycle() {\n    return true;\n  },\n};\n",
    );
    let js = js.replace("{{name}}", name);
    let test = format!(
        "// Unit tests of {name} on the fake host (postern-testing.mjs, written next\n\
         // to it by `postern plugin new`); plain Node, no wasm toolchain: `node --test`.\n\n\
         import assert from 'node:assert/strict';\nimport {{ beforeEach, test }} from 'node:test';\n\n\
         // First: makes the postern:policy/* imports of plugin.js resolve to the fake host.\n\
         // eslint-disable-next-line no-unused-vars\n\
         import {{ address, exportResult, host, message, session, verdict }} from './postern-testing.mjs';\n\n\
         const plugin = await import('./plugin.js');\n\n\
         beforeEach(() => host.reset());\n\n\
         const init = (config) => exportResult(plugin.init.init, JSON.stringify(config));\n{tests}"
    );
    let package = format!(
        "{{\n  \"name\": \"{name}\",\n  \"version\": \"0.1.0\",\n  \"private\": true,\n  \
         \"description\": \"A Postern policy plugin\",\n  \"type\": \"module\",\n  \"scripts\": {{\n    \
         \"build\": \"bash ./build.sh\",\n    \"test\": \"node --test\"\n  }},\n  \
         \"devDependencies\": {{\n    \"@bytecodealliance/componentize-js\": \"0.23.0\",\n    \
         \"@bytecodealliance/jco\": \"1.35.0\",\n    \"@bytecodealliance/preview2-shim\": \"0.25.0\"\n  }}\n}}\n"
    );
    let mut files = vec![
        ("plugin.js".into(), js),
        ("plugin.test.js".into(), test),
        (
            "postern-testing.mjs".into(),
            super::js_fake_host().to_string(),
        ),
        ("package.json".into(), package),
        ("build.mjs".into(), BUILD_MJS.replace("{{name}}", name)),
    ];
    files.extend(plan.component_files(
        super::Lang::Javascript,
        BUILD,
        "node --test",
        "/target/\n/node_modules/\n",
    ));
    files
}

const BUILD_MJS: &str = r#"// Componentize plugin.js against wit/ world `{{name}}`. Called by build.sh:
// `node build.mjs <output.wasm>`. TOOLCHAIN_DIR names a folder whose
// node_modules holds @bytecodealliance/componentize-js (default: this one).
// `http` and `fetch-event` are disabled so the component imports no
// wasi:http interfaces (Postern does not provide them).

import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs <output.wasm>');
  process.exit(2);
}
const dir = process.env.TOOLCHAIN_DIR || here;
const pkg = join(dir, 'node_modules', '@bytecodealliance', 'componentize-js');
const entry = JSON.parse(await readFile(join(pkg, 'package.json'), 'utf8')).exports.import;
const { componentize } = await import(pathToFileURL(join(pkg, entry)).href);
process.chdir(here);
const { component } = await componentize({
  sourcePath: join(here, 'plugin.js'),
  witPath: join(here, 'wit'),
  worldName: '{{name}}',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
"#;

const BUILD: &str = r#"#!/usr/bin/env bash
# Build {{name}} into a WebAssembly component with componentize-js.
#   Inside a Postern checkout: <checkout>/target/plugins/{{name}}.wasm, with
#     the JS toolchain installed once for the checkout (plugins/header-filter,
#     same pinned versions) unless this folder has its own node_modules, and
#     the WIT in wit/deps/ refreshed from the checkout's wit/ (`make build`
#     runs this script for every plugins/*/build.sh).
#   Elsewhere: target/{{name}}.wasm here, with $TOOLCHAIN_DIR's node_modules
#     or this folder's (`npm install` on first use, versions in package.json);
#     the WIT in wit/deps/ is what `postern plugin new` wrote.
# OUT=path chooses the output; FORCE=1 rebuilds an up-to-date component.
{{find_checkout}}has_toolchain() { [ -f "$1/node_modules/@bytecodealliance/componentize-js/package.json" ]; }
inputs=("$here/plugin.js" "$here/build.mjs" "$here/build.sh" "$here/wit/world.wit" "$here/package.json")
if [ "$root" != / ]; then
    . "$root/plugins/build-lib.sh"
    out="${OUT:-$root/target/plugins/$PLUGIN.wasm}"
    if [ -z "${TOOLCHAIN_DIR:-}" ]; then
        if has_toolchain "$here"; then
            TOOLCHAIN_DIR="$here"
        else
            TOOLCHAIN_DIR="$root/plugins/header-filter"
            postern_npm_toolchain "$TOOLCHAIN_DIR"
        fi
    fi
    postern_wit_deps "$here" "$root"
    inputs+=("$root"/wit/*.wit)
else
    out="${OUT:-$here/target/$PLUGIN.wasm}"
    if [ -z "${TOOLCHAIN_DIR:-}" ]; then
        TOOLCHAIN_DIR="$here"
        if ! has_toolchain "$here"; then
            echo "$PLUGIN: installing the JS toolchain here (npm install)" >&2
            (cd "$here" && npm install --no-audit --no-fund --loglevel=error >&2)
        fi
    fi
    inputs+=("$here"/wit/deps/postern-policy/*.wit)
fi
{{skip_if_fresh}}mkdir -p "$(dirname "$out")"
trap 'rm -f "$out.tmp.$$"' EXIT
(cd "$here" && TOOLCHAIN_DIR="$TOOLCHAIN_DIR" node build.mjs "$out.tmp.$$")
mv -f "$out.tmp.$$" "$out"
echo "$PLUGIN: wrote $out ($(wc -c <"$out") bytes)" >&2
"#;
