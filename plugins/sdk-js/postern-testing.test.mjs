// Tests of the fake Postern host (postern-testing.mjs); plain Node:
// `cd plugins/sdk-js && node --test`. The drift check generates the guest
// types of world `all-stages` (wit/worlds.wit) with the jco of
// plugins/header-filter/node_modules (or $POSTERN_JS_TOOLCHAIN/node_modules)
// and checks every imported function, resource method, enum case and error
// case against the fake; it is skipped, saying why, without that toolchain.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, copyFileSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { beforeEach, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { address, exportResult, host, message, session, verdict } from './postern-testing.mjs';

const fake = await import('postern:policy/kv@0.2.0');
const { get, set, setIfAbsent, increment, nowMs, log, lookupA, lookupAaaa, lookupMx, lookupTxt, lookupPtr, checkSpf, scanMessage } = fake;
const kvDelete = fake.delete;
const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');

beforeEach(() => host.reset());

/** The payload of the error `fn` throws. */
function thrown(fn) {
  try {
    fn();
  } catch (e) {
    assert.equal(e.constructor.name, 'ComponentError');
    return e.payload;
  }
  assert.fail('expected a throw');
}

test('every postern:policy specifier is the fake module', async () => {
  const log020 = await import('postern:policy/log@0.2.0');
  const dns = await import('postern:policy/dns@0.2.0');
  assert.equal(log020.host, host);
  assert.equal(dns.lookupA, lookupA);
});

test('kv TTL expires through the clock', () => {
  set('k', 'v', 1000n);
  assert.equal(get('k'), 'v');
  host.advance(999);
  assert.equal(get('k'), 'v');
  host.advance(1);
  assert.equal(get('k'), undefined);
  set('forever', 'v', undefined);
  host.advance(1e12);
  assert.equal(get('forever'), 'v');
});

test('clock is settable and a BigInt to the plugin', () => {
  host.nowMs = 5;
  assert.equal(nowMs(), 5n);
  host.advance(7);
  assert.equal(nowMs(), 12n);
});

test('increment has a fixed window from the first increment', () => {
  assert.equal(increment('n', 1n, 60_000n), 1n);
  host.advance(30_000);
  assert.equal(increment('n', 2n, 60_000n), 3n);
  host.advance(29_999);
  assert.equal(increment('n', 1, 60_000), 4n);
  host.advance(1);
  assert.equal(get('n'), undefined);
  assert.equal(increment('n', 5n, 60_000n), 5n);
  assert.equal(get('n'), '5');
  assert.equal(increment('n', -7n, 60_000n), -2n);
  assert.throws(() => increment('n', 1.5, 10n), RangeError);
});

test('setIfAbsent and delete', () => {
  assert.equal(setIfAbsent('k', 'a', 100n), true);
  assert.equal(setIfAbsent('k', 'b', 100n), false);
  assert.equal(get('k'), 'a');
  host.advance(100);
  assert.equal(setIfAbsent('k', 'c', undefined), true);
  assert.equal(kvDelete('k'), true);
  assert.equal(kvDelete('k'), false);
});

test('kv failure injection and grants', () => {
  host.kvFail = 'unavailable';
  assert.deepEqual(thrown(() => get('k')), { tag: 'unavailable', val: 'injected failure' });
  host.kvFail = ['unavailable', 'redis down'];
  assert.deepEqual(thrown(() => set('k', 'v', undefined)), { tag: 'unavailable', val: 'redis down' });
  host.kvFail = 'denied';
  assert.deepEqual(thrown(() => increment('k', 1n, 10n)), { tag: 'denied' });
  host.kvFail = undefined;
  assert.equal(get('k'), undefined);
  assert.equal(thrown(() => get('')).tag, 'invalid');
  host.grant('dns');
  assert.deepEqual(thrown(() => get('k')), { tag: 'denied' });
});

test('scripted dns, nx-domain by default, no-records for other types', () => {
  host.dns.a('mx.example.org', ['192.0.2.1']).aaaa('mx.example.org', ['2001:db8::1']);
  host.dns.mx('example.org', [[20, 'b.example.org'], { preference: 10, exchange: 'a.example.org' }]);
  host.dns.txt('example.org', ['v=spf1 -all']).ptr('192.0.2.1', ['mx.example.org']);
  assert.deepEqual(lookupA('MX.example.org.'), ['192.0.2.1']);
  assert.deepEqual(lookupAaaa('mx.example.org'), ['2001:db8::1']);
  assert.deepEqual(lookupMx('example.org'), [
    { preference: 10, exchange: 'a.example.org' },
    { preference: 20, exchange: 'b.example.org' },
  ]);
  assert.deepEqual(lookupTxt('example.org'), ['v=spf1 -all']);
  assert.deepEqual(lookupPtr('192.0.2.1'), ['mx.example.org']);
  assert.deepEqual(host.dnsQueries[0], ['a', 'MX.example.org.']);
  assert.deepEqual(thrown(() => lookupA('unknown.example')), { tag: 'nx-domain' });
  assert.deepEqual(thrown(() => lookupA('example.org')), { tag: 'no-records' });
  host.dns.error('slow.example', ['temporary', 'timeout']);
  assert.deepEqual(thrown(() => lookupTxt('slow.example')), { tag: 'temporary', val: 'timeout' });
  assert.equal(thrown(() => lookupPtr('not an ip')).tag, 'invalid');
  host.dnsFail = 'temporary';
  assert.equal(thrown(() => lookupA('mx.example.org')).tag, 'temporary');
  host.dnsFail = undefined;
  host.grant('kv');
  assert.deepEqual(thrown(() => lookupA('mx.example.org')), { tag: 'denied' });
});

test('log capture checks the level enum', () => {
  log('warn', 'sender refused', [['sender', 'a@b']]);
  assert.deepEqual(host.logs, [{ level: 'warn', message: 'sender refused', fields: [['sender', 'a@b']] }]);
  assert.ok(host.logged('refused'));
  assert.ok(host.logged('refused', 'warn'));
  assert.ok(!host.logged('refused', 'info'));
  assert.throws(() => log('WARN', 'x', []), TypeError);
});

test('mail-auth answers are scripted and need the grant', () => {
  assert.equal(checkSpf('192.0.2.1', 'h.example', 'a@example.net').mailFrom.domain, 'example.net');
  host.mailAuth.checkSpf = () => 'scripted';
  assert.equal(checkSpf('192.0.2.1', 'h', ''), 'scripted');
  host.grant();
  assert.deepEqual(thrown(() => checkSpf('192.0.2.1', 'h', '')), { tag: 'denied' });
});

test('session builder: defaults and values', () => {
  let s = session();
  assert.deepEqual([s.id(), s.clientIp(), s.clientPort(), s.localIp(), s.localPort()], ['s1', '192.0.2.1', 40000, '192.0.2.25', 25]);
  assert.deepEqual([s.listener(), s.serverName(), s.helo(), s.esmtp(), s.tls()], ['smtp', 'mx.example.org', undefined, false, undefined]);
  s = session({ helo: 'c.example', tls: true, mailFrom: 'a@b.example', recipients: ['x@mx.example.org'], authUser: 'jane' });
  assert.equal(s.esmtp(), true);
  assert.equal(s.tls().protocol, 'TLSv1.3');
  assert.equal(s.mailFrom().domain, 'b.example');
  assert.equal(s.recipientCount(), 1);
  assert.equal(s.authUser(), 'jane');
});

test('address splits at the last @', () => {
  const a = address('"odd@local"@example.org', { local: true, params: ['SIZE=100', 'smtputf8'] });
  assert.deepEqual(a, {
    address: '"odd@local"@example.org',
    localPart: '"odd@local"',
    domain: 'example.org',
    params: [{ keyword: 'SIZE', value: '100' }, { keyword: 'SMTPUTF8', value: undefined }],
    isLocal: true,
  });
  assert.deepEqual([address('<>').address, address('<>').domain], ['', '']);
  assert.equal(address('Postmaster').isLocal, true);
});

test('message accessors', () => {
  const m = message('Subject: hello\n world\nFrom: a@b\nX-Empty:\nsubject: again\n\nbody\n');
  assert.equal(m.header('SUBJECT'), 'hello world');
  assert.deepEqual(m.headerAll('subject'), ['hello world', 'again']);
  assert.equal(m.header('x-empty'), '');
  assert.equal(m.header('missing'), undefined);
  assert.deepEqual(m.headers().map((h) => h.name), ['Subject', 'From', 'X-Empty', 'subject']);
  assert.equal(m.bodySize(), 6n);
  assert.deepEqual(new TextDecoder().decode(m.readBody(0n, 100)), 'body\r\n');
  assert.deepEqual(new TextDecoder().decode(m.readBody(2, 2)), 'dy');
  assert.equal(m.readBody(100n, 10).length, 0);
  assert.equal(m.size(), BigInt('Subject: hello\r\n world\r\nFrom: a@b\r\nX-Empty:\r\nsubject: again\r\n\r\nbody\r\n'.length));
  const odd = message('A: 1\r\nnot a header\r\nB: 2\r\n', { crlf: false });
  assert.equal(odd.headers().length, 1);
  assert.equal(new TextDecoder().decode(odd.readBody(0, 100)), 'not a header\r\nB: 2\r\n');
});

test('verdict and exportResult helpers', () => {
  assert.deepEqual(verdict({ tag: 'pass' }), ['pass', undefined, undefined, undefined]);
  const reply = { code: 450, enhanced: '4.7.1', text: 'later' };
  assert.deepEqual(verdict({ verdict: { tag: 'defer', val: reply } }), ['defer', 450, '4.7.1', 'later']);
  assert.deepEqual(exportResult(() => undefined), { tag: 'ok', val: undefined });
  assert.deepEqual(exportResult(() => ({ tag: 'err', val: 'no' })), { tag: 'err', val: 'no' });
  assert.deepEqual(exportResult(() => { throw new Error('bad'); }), { tag: 'err', val: 'bad' });
});

// ---------------------------------------------------------------------------
// Drift check against `jco guest-types`

const toolchain = join(process.env.POSTERN_JS_TOOLCHAIN ?? join(repo, 'plugins', 'header-filter'), 'node_modules');
const transpile = join(toolchain, '@bytecodealliance', 'jco-transpile');

/** The guest .d.ts files of world all-stages, or a reason why not. */
async function guestTypes() {
  if (!existsSync(join(transpile, 'dist', 'typegen.js'))) return `no jco toolchain in ${toolchain}`;
  if (!existsSync(join(repo, 'wit', 'worlds.wit'))) return 'no wit/ directory (outside the Postern repository)';
  // jco 1.35's preview2-shim starts without preopens: give it the file system.
  const shim = [join(transpile, 'node_modules'), toolchain]
    .map((d) => join(d, '@bytecodealliance', 'preview2-shim', 'dist', 'nodejs', 'filesystem.js'))
    .find(existsSync);
  if (!shim) return 'no @bytecodealliance/preview2-shim with dist/nodejs/filesystem.js';
  (await import(pathToFileURL(shim).href))._setPreopens?.({ '/': '/' });
  const { generateGuestTypes } = await import(pathToFileURL(join(transpile, 'dist', 'typegen.js')).href);
  const dir = mkdtempSync(join(tmpdir(), 'postern-drift-'));
  try {
    const deps = join(dir, 'wit', 'deps', 'postern-policy');
    mkdirSync(deps, { recursive: true });
    for (const f of readdirSync(join(repo, 'wit')).filter((f) => f.endsWith('.wit'))) {
      copyFileSync(join(repo, 'wit', f), join(deps, f));
    }
    writeFileSync(join(dir, 'wit', 'world.wit'), 'package drift:check;\n\nworld drift {\n    include postern:policy/all-stages@0.2.0;\n}\n');
    const files = await generateGuestTypes(join(dir, 'wit'), { worldName: 'drift', outDir: 'out/' });
    return Object.values(files).map((f) => new TextDecoder().decode(f));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Imported interfaces of the .d.ts: { specifier: body }. */
function importedModules(dts) {
  const world = dts.find((t) => t.includes("declare module 'drift:check/drift'"));
  const imported = [...world.matchAll(/from '([^']+)'; \/\/ import /g)].map((m) => m[1]);
  const modules = {};
  for (const t of dts) {
    for (const m of t.matchAll(/declare module '([^']+)' \{\n([\s\S]*?)\n\}/g)) {
      if (imported.includes(m[1])) modules[m[1]] = m[2].replace(/\/\*\*[\s\S]*?\*\//g, '');
    }
  }
  return modules;
}

test('drift: the fake covers every import of jco guest-types', async (t) => {
  const dts = await guestTypes();
  if (typeof dts === 'string') {
    t.skip(dts);
    return;
  }
  const modules = importedModules(dts);
  assert.deepEqual(Object.keys(modules).sort(), ['av-scan', 'clock', 'delivery', 'dns', 'kv', 'log', 'mail-auth', 'message', 'types'].map((i) => `postern:policy/${i}@0.2.0`));
  // Parameters at the top level of a signature (types may hold commas).
  const paramCount = (params) => {
    let depth = 0;
    let count = params.trim() ? 1 : 0;
    for (const c of params) {
      if ('<[({'.includes(c)) depth += 1;
      else if ('>])}'.includes(c)) depth -= 1;
      else if (c === ',' && depth === 0) count += 1;
    }
    return count;
  };
  for (const [specifier, body] of Object.entries(modules)) {
    const mod = await import(specifier);
    for (const [, name, params] of body.matchAll(/^ {2}export function (\w+)\(([^)]*)\)/gm)) {
      assert.equal(typeof mod[name], 'function', `${specifier}: ${name} missing`);
      assert.equal(mod[name].length, paramCount(params), `${specifier}: ${name} parameters`);
    }
    for (const [, alias, name] of body.matchAll(/export \{ (\w+) as (\w+) \};/g)) {
      const [, params] = body.match(new RegExp(`function ${alias}\\(([^)]*)\\)`));
      assert.equal(typeof mod[name], 'function', `${specifier}: ${name} missing`);
      assert.equal(mod[name].length, paramCount(params), `${specifier}: ${name} parameters`);
    }
    for (const [, name, members] of body.matchAll(/export class (\w+) implements Disposable \{\n([\s\S]*?)\n {2}\}/g)) {
      assert.equal(typeof mod[name], 'function', `${specifier}: class ${name} missing`);
      for (const [, method, params] of members.matchAll(/^ {4}(\w+)\(([^)]*)\)/gm)) {
        assert.equal(typeof mod[name].prototype[method], 'function', `${specifier}: ${name}.${method} missing`);
        assert.equal(mod[name].prototype[method].length, paramCount(params), `${specifier}: ${name}.${method} parameters`);
      }
      assert.equal(typeof mod[name].prototype[Symbol.dispose], 'function', `${name} [Symbol.dispose]`);
    }
  }
  // Enum cases: every log level is accepted.
  const levels = modules['postern:policy/log@0.2.0'].match(/export type Level = ([^;]+);/)[1];
  for (const [, level] of levels.matchAll(/'([^']+)'/g)) log(level, 'x', []);
  // Error cases: each can be scripted and comes back as the thrown payload.
  const cases = (iface, type) => {
    const body = modules[`postern:policy/${iface}@0.2.0`];
    const names = body.match(new RegExp(`export type ${type} = ([^;]+);`))[1].split('|').map((s) => s.trim());
    return names.map((n) => {
      const [, inner] = body.match(new RegExp(`export interface ${n} \\{([^}]*)\\}`));
      return { tag: inner.match(/tag: '([^']+)'/)[1], hasVal: /val:/.test(inner) };
    });
  };
  for (const { tag, hasVal } of cases('kv', 'KvError')) {
    host.kvFail = tag;
    assert.deepEqual(thrown(() => get('k')), hasVal ? { tag, val: 'injected failure' } : { tag });
  }
  for (const { tag, hasVal } of cases('dns', 'DnsError')) {
    host.dns.error(`${tag}.example`, tag);
    assert.deepEqual(thrown(() => lookupA(`${tag}.example`)), hasVal ? { tag, val: 'scripted failure' } : { tag });
  }
  for (const { tag, hasVal } of cases('mail-auth', 'MailAuthError')) {
    host.mailAuthFail = tag;
    assert.deepEqual(thrown(() => checkSpf('192.0.2.1', 'h', '')), hasVal ? { tag, val: 'injected failure' } : { tag });
  }
  for (const { tag, hasVal } of cases('av-scan', 'ScanError')) {
    host.avScanFail = tag;
    assert.deepEqual(thrown(() => scanMessage(message('a: b\r\n\r\n'))), hasVal ? { tag, val: 'injected failure' } : { tag });
  }
});
