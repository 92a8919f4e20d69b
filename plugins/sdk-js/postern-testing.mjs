// Fake Postern host for unit-testing JavaScript plugins with plain Node
// (`node --test`, Node 20.6 or later), without a wasm toolchain.
//
// What it is: importing this module registers a module resolve hook
// (node:module `register`) that maps every `postern:policy/<iface>@<version>`
// specifier to this very file, so a plugin's
// `import { log } from 'postern:policy/log@0.2.0'` gets the fake functions
// exported here, named and shaped as componentize-js 0.23 gives them to
// guest code: camelCase functions and resource methods, enums as strings
// ('info'), variants as { tag, val }, options as undefined, u64/s64 as
// BigInt, list<u8> as Uint8Array, and an import returning result<T, E>
// returns T or throws an Error (a ComponentError, as the bindings call it)
// whose `payload` is the E value (e.g. { tag: 'nx-domain' }).
//
// How to use it: import it first, then load the plugin with a dynamic
// import (static imports are resolved before the hook is registered):
//
//   import { host, session, message, verdict } from '../sdk-js/postern-testing.mjs';
//   const plugin = await import('./plugin.js');
//   beforeEach(() => host.reset());
//   test('...', () => {
//     const r = plugin.dataHook.onData(session(), message('Subject: hi\r\n\r\nbody'));
//     assert.deepEqual(verdict(r), ['pass', undefined, undefined, undefined]);
//   });
//
// `host` holds the state: logs/logged(), a settable clock (nowMs, advance),
// the kv store (TTLs and increment's fixed window as wit/host.wit documents
// them), scripted DNS (host.dns.a(...); unscripted names answer nx-domain;
// dnsQueries records every look-up), failure injection (kvFail, dnsFail,
// mailAuthFail) and capability grants (grant()). session(), address(),
// message() build stage arguments, verdict() flattens a verdict,
// exportResult() runs an export as componentize-js does (returned
// { tag, val } or plain value, or a throw) and importFresh() loads a fresh
// copy of a plugin module (the host gives every session a fresh instance).
//
// What it trusts: wit/*.wit (postern:policy@0.2.0), the Postern host's
// behaviour as of this writing (kv memory store, header parsing, address
// split) and componentize-js 0.23's bindings (jco js-component-bindgen:
// ThrowResultErr for imports, result objects or throws for exports). Names
// are checked by postern-testing.test.mjs against `jco guest-types` output
// when the toolchain of plugins/header-filter is installed. Node's standard
// library only: this file is copied verbatim next to plugin sources. Shared
// state lives here, in the main thread; the resolve hook (which runs off
// thread) only maps specifiers.

import { register } from 'node:module';
import { isIP } from 'node:net';

// ---------------------------------------------------------------------------
// The resolve hook: every postern:policy interface is this module.

const HOOKS = `
export async function resolve(specifier, context, next) {
  if (/^postern:policy\\/[a-z0-9-]+@[0-9][0-9a-z.+-]*$/.test(specifier)) {
    return { url: ${JSON.stringify(import.meta.url)}, shortCircuit: true };
  }
  return next(specifier, context);
}
`;
register(`data:text/javascript,${encodeURIComponent(HOOKS)}`);

export const DEFAULT_NOW_MS = 1_700_000_000_000;
const MAX_KEY = 1024; // bytes, as the host's kv checks them
const MAX_VALUE = 64 * 1024;
const MAX_READ = 1 << 20; // message reads are capped at 1 MiB per call
const CAPABILITIES = ['kv', 'dns', 'mail-auth', 'av-scan'];
const S64_MIN = -(1n << 63n);
const S64_MAX = (1n << 63n) - 1n;

/** The error the bindings throw when an import answers `err` (jco's intrinsic). */
class ComponentError extends Error {
  constructor(value) {
    const enumerable = typeof value !== 'string';
    super(enumerable ? `${String(value)} (see error.payload)` : value);
    Object.defineProperty(this, 'payload', { value, enumerable });
  }
}

// Lowering as the bindings do it: integers through BigInt (a fraction or a
// non-number throws), enums checked against their cases.
const u64 = (v) => BigInt.asUintN(64, BigInt(v));
const s64 = (v) => BigInt.asIntN(64, BigInt(v));
function enumCase(value, cases, name) {
  if (!cases.includes(value)) throw new TypeError(`"${value}" is not one of the cases of ${name}`);
  return value;
}

/** A variant value from a short spec: 'tag', [tag, val] or { tag, val }. */
function variant(spec, cases, defaultText) {
  const [tag, val] = typeof spec === 'string' ? [spec, undefined] : Array.isArray(spec) ? spec : [spec.tag, spec.val];
  if (!(tag in cases)) throw new TypeError(`unknown error case ${tag}; one of ${Object.keys(cases).join(', ')}`);
  return cases[tag] ? { tag, val: val ?? defaultText } : { tag };
}
const KV_ERRORS = { denied: false, unavailable: true, invalid: true };
const DNS_ERRORS = { 'nx-domain': false, 'no-records': false, temporary: true, invalid: true, denied: false };
const MAIL_AUTH_ERRORS = { denied: false, invalid: true };
const AV_SCAN_ERRORS = { denied: false, unavailable: true, 'too-large': false };
const fail = (payload) => {
  throw new ComponentError(payload);
};

const dnsName = (name) => name.trim().toLowerCase().replace(/\.+$/, '');
function ptrKey(ip) {
  const text = ip.trim();
  // A canonical text form, so "2001:DB8::1" and "2001:db8::1" meet.
  return isIP(text) === 6 ? new URL(`http://[${text}]`).hostname.slice(1, -1) : text;
}

// ---------------------------------------------------------------------------
// The fake host

class Dns {
  constructor() {
    this.answers = new Map(); // "type name" -> array, or an error payload
    this.errors = new Map(); // name -> error payload for every type
  }

  #put(type, name, value) {
    this.answers.set(`${type} ${type === 'ptr' ? ptrKey(name) : dnsName(name)}`, value);
    return this;
  }

  a(name, addresses) {
    return this.#put('a', name, [...addresses]);
  }

  aaaa(name, addresses) {
    return this.#put('aaaa', name, [...addresses]);
  }

  /** `records`: { preference, exchange } or [preference, exchange]; answered sorted. */
  mx(name, records) {
    const mxs = records.map((r) => (Array.isArray(r) ? { preference: r[0], exchange: r[1] } : { ...r }));
    return this.#put('mx', name, mxs.sort((x, y) => x.preference - y.preference));
  }

  txt(name, strings) {
    return this.#put('txt', name, [...strings]);
  }

  ptr(ip, names) {
    return this.#put('ptr', ip, [...names]);
  }

  /** Answer `spec` ('nx-domain', 'no-records', ['temporary', 'why']...) for
   * `name`, for one type ('a', 'aaaa', 'mx', 'txt', 'ptr') or all of them. */
  error(name, spec, type = undefined) {
    const payload = variant(spec, DNS_ERRORS, 'scripted failure');
    if (type === undefined) {
      this.errors.set(dnsName(name), payload);
      return this;
    }
    return this.#put(type, name, payload);
  }

  answer(type, name) {
    const key = type === 'ptr' ? ptrKey(name) : dnsName(name);
    let found = this.answers.get(`${type} ${key}`);
    if (found === undefined && type !== 'ptr') {
      found = this.errors.get(key);
      if (found === undefined && [...this.answers.keys()].some((k) => k.slice(k.indexOf(' ') + 1) === key)) {
        found = { tag: 'no-records' };
      }
    }
    found ??= { tag: 'nx-domain' };
    if (Array.isArray(found)) return found.map((v) => (typeof v === 'object' ? { ...v } : v));
    return fail({ ...found });
  }
}

class Host {
  constructor() {
    this.reset();
  }

  /** Back to the start: no logs, empty kv, no DNS answers, every capability
   * granted, no injected failure, clock at DEFAULT_NOW_MS. */
  reset() {
    this.logs = []; // { level, message, fields }
    this.nowMs = DEFAULT_NOW_MS; // a Number; nowMs() hands it over as a BigInt
    this.kv = new Map(); // key -> { value, expiresAt: bigint | undefined }
    this.kvFail = undefined; // 'unavailable', 'denied', 'invalid', [case, text]
    this.dns = new Dns();
    this.dnsFail = undefined; // 'temporary', 'denied', ... or [case, text]
    this.dnsQueries = []; // [type, name] of every look-up, in order
    this.mailAuth = {}; // checkSpf / authenticate / dkimSign -> answer or function
    this.mailAuthFail = undefined;
    this.mailAuthCalls = [];
    this.avScan = undefined; // scanMessage's answer ({ tag: 'clean' } by default) or a function of the message
    this.avScanFail = undefined; // 'unavailable', 'too-large', 'denied' or [case, text]
    this.avScanCalls = 0;
    this.grants = new Set(CAPABILITIES);
  }

  /** Grant exactly these capabilities ('kv', 'dns', 'mail-auth'); grant()
   * grants none. Ungranted calls throw `denied`. */
  grant(...capabilities) {
    const unknown = capabilities.filter((c) => !CAPABILITIES.includes(c));
    if (unknown.length) throw new TypeError(`unknown capabilities: ${unknown.join(', ')}`);
    this.grants = new Set(capabilities);
  }

  advance(ms) {
    this.nowMs += Number(ms);
  }

  /** True when a logged message contains `substring` (at `level` when given). */
  logged(substring, level = undefined) {
    return this.logs.some((l) => l.message.includes(substring) && (level === undefined || l.level === level));
  }

  // -- kv (the host's memory store: an entry lives while expiresAt > now) --

  kvGuard(key, value = undefined) {
    if (!this.grants.has('kv')) fail({ tag: 'denied' });
    const size = Buffer.byteLength(key);
    if (size < 1 || size > MAX_KEY) fail({ tag: 'invalid', val: `key length ${size} not in 1..=${MAX_KEY}` });
    if (value !== undefined && Buffer.byteLength(value) > MAX_VALUE) {
      fail({ tag: 'invalid', val: `value length ${Buffer.byteLength(value)} exceeds ${MAX_VALUE}` });
    }
    if (this.kvFail !== undefined) fail(variant(this.kvFail, KV_ERRORS, 'injected failure'));
  }

  live(key) {
    const entry = this.kv.get(key);
    const now = BigInt(this.nowMs);
    return entry && (entry.expiresAt === undefined || entry.expiresAt > now) ? entry : undefined;
  }

  deadline(ttlMs) {
    if (ttlMs === undefined) return undefined;
    const ttl = u64(ttlMs);
    return BigInt(this.nowMs) + (ttl > 0n ? ttl : 1n); // a zero TTL counts as 1 ms
  }
}

/** The one fake host of this process; call host.reset() between tests. */
export const host = new Host();

// ---------------------------------------------------------------------------
// postern:policy/log, clock

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

export function log(level, message, fields) {
  enumCase(level, LEVELS, 'level');
  host.logs.push({ level, message, fields: fields.map(([k, v]) => [k, v]) });
}

export function nowMs() {
  return BigInt(host.nowMs);
}

// ---------------------------------------------------------------------------
// postern:policy/kv

export function get(key) {
  host.kvGuard(key);
  return host.live(key)?.value;
}

export function set(key, value, ttlMs) {
  host.kvGuard(key, value);
  host.kv.set(key, { value, expiresAt: host.deadline(ttlMs) });
}

export function setIfAbsent(key, value, ttlMs) {
  host.kvGuard(key, value);
  if (host.live(key)) return false;
  host.kv.set(key, { value, expiresAt: host.deadline(ttlMs) });
  return true;
}

function kvDelete(key) {
  host.kvGuard(key);
  const existed = host.live(key) !== undefined;
  host.kv.delete(key);
  return existed;
}
export { kvDelete as delete };

/** A live counter keeps its expiry; a missing or expired one starts at
 * `delta` and lives `windowMs` from now. A non-numeric value counts as 0;
 * the sum saturates at the s64 bounds. Returns a BigInt. */
export function increment(key, delta, windowMs) {
  host.kvGuard(key);
  const d = s64(delta);
  const window = host.deadline(windowMs);
  const entry = host.live(key);
  let value = d;
  let expiresAt = window;
  if (entry) {
    const current = /^[+-]?\d+$/.test(entry.value) ? BigInt(entry.value) : 0n;
    value = current + d;
    value = value > S64_MAX ? S64_MAX : value < S64_MIN ? S64_MIN : value;
    expiresAt = entry.expiresAt;
  }
  host.kv.set(key, { value: String(value), expiresAt });
  return value;
}

// ---------------------------------------------------------------------------
// postern:policy/dns

function lookup(type, name) {
  host.dnsQueries.push([type, name]);
  if (type === 'ptr' && !isIP(name.trim())) fail({ tag: 'invalid', val: `${JSON.stringify(name)} is not an IP address` });
  if (!host.grants.has('dns')) fail({ tag: 'denied' });
  if (type !== 'ptr' && (name.length < 1 || name.length > 254)) {
    fail({ tag: 'invalid', val: `bad name length ${name.length}` });
  }
  if (host.dnsFail !== undefined) fail(variant(host.dnsFail, DNS_ERRORS, 'injected failure'));
  return host.dns.answer(type, name);
}

export const lookupA = (name) => lookup('a', name);
export const lookupAaaa = (name) => lookup('aaaa', name);
export const lookupMx = (name) => lookup('mx', name);
export const lookupTxt = (name) => lookup('txt', name);
export const lookupPtr = (ip) => lookup('ptr', ip);

// ---------------------------------------------------------------------------
// postern:policy/mail-auth (answers are scripted: nothing is verified)

const spfNone = (domain) => ({ result: 'none', domain, explanation: undefined });
const MAIL_AUTH_DEFAULTS = {
  checkSpf: (clientIp, helo, mailFrom) => ({
    helo: spfNone(helo),
    mailFrom: spfNone(mailFrom.includes('@') ? mailFrom.slice(mailFrom.lastIndexOf('@') + 1) : helo),
  }),
  authenticate: (message, clientIp, helo, mailFrom) => ({
    spf: MAIL_AUTH_DEFAULTS.checkSpf(clientIp, helo, mailFrom),
    dkim: [],
    arc: { result: 'none', instances: 0, error: undefined },
    dmarc: {
      fromDomain: '',
      result: 'none',
      spfAligned: false,
      dkimAligned: false,
      recordFound: false,
      policy: 'none',
      publishedP: 'none',
      publishedSp: 'none',
      pct: 100,
    },
  }),
  dkimSign: (message, domain, selector) => `v=1; a=fake; d=${domain}; s=${selector}; b=fake`,
};

function mailAuthCall(fn, args) {
  host.mailAuthCalls.push([fn, args]);
  if (!host.grants.has('mail-auth')) fail({ tag: 'denied' });
  if (host.mailAuthFail !== undefined) fail(variant(host.mailAuthFail, MAIL_AUTH_ERRORS, 'injected failure'));
  const answer = host.mailAuth[fn];
  if (typeof answer === 'function') return answer(...args);
  return answer !== undefined ? answer : MAIL_AUTH_DEFAULTS[fn](...args);
}

export function checkSpf(clientIp, helo, mailFrom) {
  return mailAuthCall('checkSpf', [clientIp, helo, mailFrom]);
}

export function authenticate(message, clientIp, helo, mailFrom) {
  return mailAuthCall('authenticate', [message, clientIp, helo, mailFrom]);
}

export function dkimSign(message, domain, selector, algorithm, privateKeyPem, headers) {
  return mailAuthCall('dkimSign', [message, domain, selector, algorithm, privateKeyPem, headers]);
}

// ---------------------------------------------------------------------------
// postern:policy/av-scan (answers are scripted: nothing is scanned)

export function scanMessage(message) {
  host.avScanCalls += 1;
  if (!host.grants.has('av-scan')) fail({ tag: 'denied' });
  if (host.avScanFail !== undefined) fail(variant(host.avScanFail, AV_SCAN_ERRORS, 'injected failure'));
  if (typeof host.avScan === 'function') return host.avScan(message);
  return host.avScan ?? { tag: 'clean' };
}

// ---------------------------------------------------------------------------
// Resources: postern:policy/types `Session`, postern:policy/message `Message`

const dispose = Symbol.dispose ?? Symbol.for('nodejs.dispose');

/** The `session` resource; build one with session({...}). */
export class Session {
  #f;

  constructor(fields) {
    this.#f = fields;
  }

  id() { return this.#f.id; }
  clientIp() { return this.#f.clientIp; }
  clientPort() { return this.#f.clientPort; }
  clientName() { return this.#f.clientName; }
  localIp() { return this.#f.localIp; }
  localPort() { return this.#f.localPort; }
  listener() { return this.#f.listener; }
  serverName() { return this.#f.serverName; }
  helo() { return this.#f.helo; }
  esmtp() { return this.#f.esmtp; }
  tls() { return this.#f.tls; }
  authUser() { return this.#f.authUser; }
  mailFrom() { return this.#f.mailFrom; }
  recipients() { return [...this.#f.recipients]; }
  recipientCount() { return this.#f.recipientCount; }
  messagesAccepted() { return this.#f.messagesAccepted; }
  [dispose]() {} // a borrowed handle: nothing to release
}

/** The header index of `raw` as the host builds it: fields up to the empty
 * line; the section also ends at the first line that is neither a field nor a
 * continuation (which then starts the body). */
function parseHeaders(raw) {
  const text = (bytes) => new TextDecoder().decode(bytes);
  const fields = [];
  let pos = 0;
  while (pos < raw.length) {
    let end = raw.indexOf(13, pos);
    while (end >= 0 && raw[end + 1] !== 10) end = raw.indexOf(13, end + 1);
    if (end < 0) end = raw.length;
    const line = raw.subarray(pos, end);
    const next = Math.min(end + 2, raw.length);
    if (line.length === 0) return { bodyStart: next, fields };
    if (line[0] === 0x20 || line[0] === 0x09) {
      if (!fields.length) return { bodyStart: pos, fields };
      fields[fields.length - 1].value += text(line);
    } else {
      const colon = line.indexOf(0x3a);
      const name = line.subarray(0, Math.max(colon, 0));
      if (colon <= 0 || !name.every((b) => b >= 33 && b <= 126)) return { bodyStart: pos, fields };
      let value = line.subarray(colon + 1);
      if (value[0] === 0x20 || value[0] === 0x09) value = value.subarray(1);
      fields.push({ name: text(name), value: text(value) });
    }
    pos = next;
  }
  return { bodyStart: raw.length, fields };
}

/** The `message` resource over an in-memory message; build one with message(raw). */
export class Message {
  #raw;
  #index;

  constructor(raw) {
    this.#raw = raw;
    this.#index = parseHeaders(raw);
  }

  size() { return BigInt(this.#raw.length); }

  header(name) {
    const wanted = name.toLowerCase();
    return this.#index.fields.find((f) => f.name.toLowerCase() === wanted)?.value;
  }

  headerAll(name) {
    const wanted = name.toLowerCase();
    return this.#index.fields.filter((f) => f.name.toLowerCase() === wanted).map((f) => f.value);
  }

  headers() { return this.#index.fields.map((f) => ({ ...f })); }

  bodySize() { return BigInt(this.#raw.length - this.#index.bodyStart); }

  readBody(offset, len) { return this.read(BigInt(this.#index.bodyStart) + u64(offset), len); }

  read(offset, len) {
    const start = u64(offset);
    if (start >= BigInt(this.#raw.length)) return new Uint8Array(0);
    const n = Math.min(Number(BigInt.asUintN(32, BigInt(len))), MAX_READ);
    return this.#raw.slice(Number(start), Number(start) + n);
  }

  [dispose]() {} // a borrowed handle: nothing to release
}

// ---------------------------------------------------------------------------
// Builders and helpers for tests (not part of the WIT interfaces)

/** An envelope-address as the host hands it over: `text` is the mailbox
 * (angle brackets optional), split at its last '@'. '' (or '<>') is the null
 * sender; a bare 'postmaster' has no domain and is local. `params`:
 * { keyword, value } objects, 'KEYWORD=value' strings or a plain object. */
export function address(text, { local = false, params = [] } = {}) {
  let mailbox = text.trim();
  if (mailbox.startsWith('<') && mailbox.endsWith('>')) mailbox = mailbox.slice(1, -1);
  const at = mailbox.lastIndexOf('@');
  const [localPart, domain] = at < 0 ? [mailbox, ''] : [mailbox.slice(0, at), mailbox.slice(at + 1)];
  const list = Array.isArray(params) ? params : Object.entries(params).map(([k, v]) => (v == null ? k : `${k}=${v}`));
  return {
    address: mailbox,
    localPart,
    domain,
    params: list.map((p) => {
      if (typeof p !== 'string') return { ...p };
      const eq = p.indexOf('=');
      return eq < 0 ? { keyword: p.toUpperCase(), value: undefined } : { keyword: p.slice(0, eq).toUpperCase(), value: p.slice(eq + 1) };
    }),
    isLocal: local || mailbox.toLowerCase() === 'postmaster',
  };
}

const asAddress = (a) => (typeof a === 'string' ? address(a) : a);

/** A Session whose getters answer these values (camelCase keys). `esmtp`
 * defaults to whether a `helo` is given; `tls: true` stands for a TLSv1.3
 * session; `mailFrom` and `recipients` take strings or address objects;
 * `recipientCount` defaults to recipients.length. */
export function session(values = {}) {
  const f = {
    id: 's1',
    clientIp: '192.0.2.1',
    clientPort: 40000,
    clientName: undefined,
    localIp: '192.0.2.25',
    localPort: 25,
    listener: 'smtp',
    serverName: 'mx.example.org',
    helo: undefined,
    esmtp: undefined,
    tls: undefined,
    authUser: undefined,
    mailFrom: undefined,
    recipients: [],
    recipientCount: undefined,
    messagesAccepted: 0,
    ...values,
  };
  f.esmtp ??= f.helo !== undefined;
  if (f.tls === true) {
    f.tls = { protocol: 'TLSv1.3', cipher: 'TLS13_AES_256_GCM_SHA384', clientCertificate: false, serverName: undefined };
  }
  if (!f.tls) f.tls = undefined;
  f.mailFrom = f.mailFrom === undefined ? undefined : asAddress(f.mailFrom);
  f.recipients = f.recipients.map(asAddress);
  f.recipientCount ??= f.recipients.length;
  return new Session(f);
}

/** A Message over an RFC 5322 message (string or bytes). With `crlf` (the
 * default) line ends become CRLF, as the host stores what it received over
 * SMTP; { crlf: false } keeps the bytes as they are. */
export function message(raw, { crlf = true } = {}) {
  let bytes = typeof raw === 'string' ? new TextEncoder().encode(raw) : Uint8Array.from(raw);
  if (crlf) {
    const out = [];
    bytes.forEach((b, i) => {
      if (b === 10 && bytes[i - 1] !== 13) out.push(13);
      out.push(b);
    });
    bytes = Uint8Array.from(out);
  }
  return new Message(bytes);
}

/** [case, code, enhanced, text] of a verdict (or of a data-result's
 * verdict); code, enhanced and text are undefined for pass and accept. */
export function verdict(v) {
  const { tag, val } = v && 'verdict' in v ? v.verdict : v;
  const cases = ['pass', 'accept', 'accept-with', 'reject', 'defer', 'disconnect'];
  if (!cases.includes(tag)) throw new TypeError(`not a verdict: ${JSON.stringify(v)}`);
  return [tag, val?.code, val?.enhanced, val?.text];
}

/** Call an export returning result<_, string> as componentize-js does: a
 * returned { tag: 'ok' | 'err', val } is the result, any other value is ok,
 * and a throw is err (the message of an Error, or the thrown value). */
export function exportResult(fn, ...args) {
  try {
    const r = fn(...args);
    const isResult = r !== null && typeof r === 'object' && (r.tag === 'ok' || r.tag === 'err');
    return isResult ? r : { tag: 'ok', val: r };
  } catch (e) {
    if (e && Object.hasOwn(e, 'payload')) return { tag: 'err', val: e.payload };
    return { tag: 'err', val: e instanceof Error ? e.message : e };
  }
}

let instances = 0;

/** Import a fresh copy of a plugin module (a new module instance per call,
 * like the fresh instance the host gives every session). */
export function importFresh(specifier, parentUrl) {
  const url = new URL(specifier, parentUrl);
  url.searchParams.set('postern-instance', String(++instances));
  return import(url.href);
}
