// Header-filter policy logic, free of any WebAssembly binding so it runs under
// plain Node (`node --test`) as well as inside the component (`plugin.js`).
// Input: the operator's configuration (trusted, validated precisely) and the
// message's header fields as the host hands them over (untrusted text,
// already unfolded per RFC 5322 §2.2.3). Implements RFC 5322 §3.6 checks
// (Date and Message-ID presence, From domain) and operator regex rules.

export class ConfigError extends Error {}

const ACTIONS = ['tag', 'reject'];
const RULE_KEYS = ['header', 'pattern', 'flags', 'action', 'text'];
const DEFAULTS = {
  rules: [],
  require_date: true,
  require_message_id: true,
  spoofed_local_from: true,
  action: 'tag',
  local_domains: [],
  trusted_networks: ['127.0.0.0/8', '::1/128'],
};
export const CONFIG_KEYS = Object.keys(DEFAULTS);

/** Name of the header added when the message is tagged. */
export const TAG_HEADER = 'X-Postern-Filter';
const MAX_TAG_VALUE = 900; // the host caps a field at 998 bytes
const MAX_REPLY_TEXT = 400;
const MAX_RULE_TEXT = 200;

// ---------------------------------------------------------------- addresses

function parseIpv4(s) {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  const out = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out.push(n);
  }
  return out;
}

function parseIpv6(s) {
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (part) => {
    if (part === '') return [];
    const out = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (i === items.length - 1 && item.includes('.')) {
        const v4 = parseIpv4(item);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(item)) {
        out.push(parseInt(item, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  let words;
  if (halves.length === 2) {
    const fill = 8 - head.length - tail.length;
    if (fill < 1) return null;
    words = [...head, ...new Array(fill).fill(0), ...tail];
  } else {
    words = head;
  }
  if (words.length !== 8) return null;
  const bytes = [];
  for (const w of words) bytes.push(w >> 8, w & 0xff);
  return bytes;
}

/**
 * Parse an IP address ("192.0.2.1", "2001:db8::1", "[::1]", "fe80::1%eth0")
 * into {version, bytes}; an IPv4-mapped IPv6 address becomes IPv4.
 * Returns null when the text is not an address.
 */
export function parseIp(text) {
  let s = String(text).trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (!s.includes(':')) {
    const v4 = parseIpv4(s);
    return v4 ? { version: 4, bytes: v4 } : null;
  }
  const v6 = parseIpv6(s);
  if (!v6) return null;
  const mapped = v6.slice(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
  if (mapped) return { version: 4, bytes: v6.slice(12) };
  return { version: 6, bytes: v6 };
}

/** Parse "a.b.c.d/n" or "x::y/n" (a bare address is a host route). */
export function parseCidr(text) {
  const s = String(text).trim();
  const slash = s.indexOf('/');
  const ip = parseIp(slash >= 0 ? s.slice(0, slash) : s);
  if (!ip) return null;
  const max = ip.version === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return null;
    prefix = Number(p);
    if (prefix > max) return null;
  }
  return { version: ip.version, bytes: ip.bytes, prefix };
}

/** Whether `ip` (from parseIp) lies in `net` (from parseCidr). */
export function inNetwork(ip, net) {
  if (!ip || ip.version !== net.version) return false;
  let bits = net.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((ip.bytes[i] & mask) !== (net.bytes[i] & mask)) return false;
  }
  return true;
}

// ------------------------------------------------------------------- config

const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const printable = (s) => /^[\x20-\x7e]*$/.test(s);

function parseRule(raw, i, errors) {
  const where = `rules[${i}]`;
  if (!isPlainObject(raw)) {
    errors.push(`${where} must be a table`);
    return null;
  }
  const unknown = Object.keys(raw).filter((k) => !RULE_KEYS.includes(k));
  if (unknown.length) {
    errors.push(`${where}: unknown key(s): ${unknown.join(', ')} (known: ${RULE_KEYS.join(', ')})`);
  }
  const { header, pattern, flags = '', action = 'tag' } = raw;
  let ok = true;
  if (typeof header !== 'string' || !/^[\x21-\x39\x3b-\x7e]+$/.test(header)) {
    errors.push(`${where}.header must be a header field name`);
    ok = false;
  }
  if (typeof pattern !== 'string') {
    errors.push(`${where}.pattern must be a string`);
    ok = false;
  }
  if (typeof flags !== 'string' || !/^[imsu]*$/.test(flags)) {
    errors.push(`${where}.flags may only combine i, m, s and u`);
    ok = false;
  }
  if (!ACTIONS.includes(action)) {
    errors.push(`${where}.action must be "tag" or "reject", got ${JSON.stringify(action)}`);
    ok = false;
  }
  let text = raw.text;
  if (text === undefined) {
    text = typeof header === 'string' ? `${header} matches rule ${i + 1}` : '';
  } else if (typeof text !== 'string' || !printable(text) || text.trim() === '' || text.length > MAX_RULE_TEXT) {
    errors.push(`${where}.text must be 1 to ${MAX_RULE_TEXT} printable ASCII characters`);
    ok = false;
  }
  let regex = null;
  if (ok) {
    try {
      regex = new RegExp(pattern, flags);
    } catch (e) {
      errors.push(`${where}.pattern is not a valid regular expression: ${e.message}`);
      ok = false;
    }
  }
  return ok ? { header, regex, action, text: text.trim() } : null;
}

function bool(raw, key, errors) {
  const v = raw[key] ?? DEFAULTS[key];
  if (typeof v !== 'boolean') errors.push(`${key} must be true or false, got ${JSON.stringify(v)}`);
  return v === true;
}

function stringList(raw, key, errors) {
  const v = raw[key] ?? DEFAULTS[key];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
    errors.push(`${key} must be a list of strings`);
    return [];
  }
  return v;
}

/** Normalize a domain for comparison: lower case, no trailing dot. */
export function normalizeDomain(d) {
  return String(d).trim().toLowerCase().replace(/\.+$/, '');
}

/**
 * Parse the plugin's `[plugin.config]` table (JSON text). Throws ConfigError
 * whose message names every offending key.
 */
export function parseConfig(text) {
  let raw;
  try {
    raw = text && text.trim() ? JSON.parse(text) : {};
  } catch (e) {
    throw new ConfigError(`configuration is not valid JSON: ${e.message}`);
  }
  if (!isPlainObject(raw)) throw new ConfigError('configuration must be a table');
  const errors = [];
  const unknown = Object.keys(raw).filter((k) => !CONFIG_KEYS.includes(k));
  if (unknown.length) {
    errors.push(`unknown configuration key(s): ${unknown.join(', ')} (known: ${CONFIG_KEYS.join(', ')})`);
  }
  const action = raw.action ?? DEFAULTS.action;
  if (!ACTIONS.includes(action)) errors.push(`action must be "tag" or "reject", got ${JSON.stringify(action)}`);
  const rulesRaw = raw.rules ?? DEFAULTS.rules;
  let rules = [];
  if (!Array.isArray(rulesRaw)) {
    errors.push('rules must be a list of tables');
  } else {
    rules = rulesRaw.map((r, i) => parseRule(r, i, errors));
  }
  const localDomains = new Set(stringList(raw, 'local_domains', errors).map(normalizeDomain));
  const trusted = [];
  for (const n of stringList(raw, 'trusted_networks', errors)) {
    const net = parseCidr(n);
    if (net) trusted.push(net);
    else errors.push(`trusted_networks: ${JSON.stringify(n)} is not a CIDR network`);
  }
  const config = {
    rules,
    requireDate: bool(raw, 'require_date', errors),
    requireMessageId: bool(raw, 'require_message_id', errors),
    spoofedLocalFrom: bool(raw, 'spoofed_local_from', errors),
    action,
    localDomains,
    trusted,
  };
  if (errors.length) throw new ConfigError(errors.join('; '));
  return config;
}

// ------------------------------------------------------------------ headers

/** Strip RFC 5322 quoted strings and (nested) comments from a header value. */
function stripQuotesAndComments(value) {
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && (quoted || depth > 0)) {
      i++;
      continue;
    }
    if (quoted) {
      if (c === '"') quoted = false;
      continue;
    }
    if (depth > 0) {
      if (c === '(') depth++;
      else if (c === ')') depth--;
      continue;
    }
    if (c === '"') quoted = true;
    else if (c === '(') depth = 1;
    else out += c;
  }
  return out;
}

/**
 * The domains of the mailboxes in a From (or Sender) value: the addr-specs
 * in angle brackets, or the bare addresses of a list. Lower-cased.
 */
export function addressDomains(value) {
  const s = stripQuotesAndComments(String(value));
  let addrs = [...s.matchAll(/<([^<>]*)>/g)].map((m) => m[1]);
  if (addrs.length === 0) addrs = s.split(/[,;:]/);
  const out = [];
  for (const a of addrs) {
    const at = a.lastIndexOf('@');
    if (at < 0) continue;
    const domain = normalizeDomain(a.slice(at + 1));
    if (domain) out.push(domain);
  }
  return out;
}

const present = (v) => typeof v === 'string' && v.trim() !== '';

/** The session may send as a local domain: authenticated or trusted. */
function privileged(config, session) {
  if (session.authUser !== undefined && session.authUser !== null) return true;
  const ip = parseIp(session.clientIp ?? '');
  return config.trusted.some((n) => inNetwork(ip, n));
}

/**
 * Run every check. `message` needs `header(name)` and `headerAll(name)`
 * (the WIT resource has both); `session` needs `authUser` and `clientIp`.
 * Returns {reasons: [{reason, action}]} in check order.
 */
export function findings(config, session, message) {
  const found = [];
  if (config.requireDate && !present(message.header('Date'))) {
    found.push({ reason: 'missing Date header', action: config.action });
  }
  if (config.requireMessageId && !present(message.header('Message-ID'))) {
    found.push({ reason: 'missing Message-ID header', action: config.action });
  }
  if (config.spoofedLocalFrom && config.localDomains.size > 0 && !privileged(config, session)) {
    const spoofed = message
      .headerAll('From')
      .flatMap(addressDomains)
      .find((d) => config.localDomains.has(d));
    if (spoofed) {
      found.push({
        reason: `local sender domain ${spoofed} from an unauthenticated client`,
        action: config.action,
      });
    }
  }
  config.rules.forEach((rule) => {
    if (message.headerAll(rule.header).some((v) => rule.regex.test(v))) {
      found.push({ reason: rule.text, action: rule.action });
    }
  });
  return found;
}

function clip(text, max) {
  // Reply text and header values are ASCII-safe by construction except for
  // domain names taken from the message: replace anything unprintable.
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length <= max ? clean : `${clean.slice(0, max - 3)}...`;
}

/**
 * The data-stage decision: reject (554 5.7.1) on the first finding whose
 * action is "reject"; otherwise pass, with a tag header listing every
 * finding when there are any. Shaped like the WIT `data-result`.
 */
export function decide(config, session, message) {
  const found = findings(config, session, message);
  const reject = found.find((f) => f.action === 'reject');
  if (reject) {
    return {
      verdict: {
        tag: 'reject',
        val: {
          code: 554,
          enhanced: '5.7.1',
          text: clip(`Message rejected: ${reject.reason}`, MAX_REPLY_TEXT),
        },
      },
      addHeaders: [],
      reasons: found.map((f) => f.reason),
    };
  }
  const reasons = [...new Set(found.map((f) => f.reason))];
  const addHeaders = reasons.length
    ? [{ name: TAG_HEADER, value: clip(reasons.join(', '), MAX_TAG_VALUE) }]
    : [];
  return { verdict: { tag: 'pass' }, addHeaders, reasons };
}
