// Unit tests of the header-filter logic; plain Node, no wasm toolchain:
// `cd plugins/header-filter && node --test`.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  addressDomains,
  ConfigError,
  decide,
  inNetwork,
  parseCidr,
  parseConfig,
  parseIp,
  TAG_HEADER,
} from './filter.js';

/** A message stand-in with the WIT resource's header look-ups. */
function message(fields) {
  const all = (name) =>
    fields.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);
  return { header: (name) => all(name)[0], headerAll: all };
}

const GOOD = [
  ['From', 'Alice <alice@example.net>'],
  ['Date', 'Mon, 1 Jan 2024 00:00:00 +0000'],
  ['Message-ID', '<1@example.net>'],
  ['Subject', 'hello'],
];
const STRANGER = { clientIp: '192.0.2.7', authUser: undefined };

test('defaults tag a message without Date and Message-ID', () => {
  const c = parseConfig('{}');
  const r = decide(c, STRANGER, message([['Subject', 'hi']]));
  assert.deepEqual(r.verdict, { tag: 'pass' });
  assert.deepEqual(r.addHeaders, [
    { name: TAG_HEADER, value: 'missing Date header, missing Message-ID header' },
  ]);
  assert.deepEqual(decide(c, STRANGER, message(GOOD)).addHeaders, []);
  // An empty Date is as good as none.
  const empty = decide(c, STRANGER, message([...GOOD.slice(0, 1), ['Date', ' '], GOOD[2]]));
  assert.deepEqual(empty.reasons, ['missing Date header']);
});

test('built-in checks can be switched off or made to reject', () => {
  const off = parseConfig(JSON.stringify({ require_date: false, require_message_id: false }));
  assert.deepEqual(decide(off, STRANGER, message([])).addHeaders, []);
  const rej = parseConfig(JSON.stringify({ action: 'reject' }));
  assert.deepEqual(decide(rej, STRANGER, message([['Date', 'x']])).verdict, {
    tag: 'reject',
    val: { code: 554, enhanced: '5.7.1', text: 'Message rejected: missing Message-ID header' },
  });
});

test('rules tag and reject; the first rejecting finding decides', () => {
  const c = parseConfig(
    JSON.stringify({
      rules: [
        { header: 'Subject', pattern: 'viagra', flags: 'i', action: 'tag', text: 'spammy subject' },
        { header: 'X-Mailer', pattern: '^BulkMailer', action: 'reject', text: 'bulk mailer' },
        { header: 'Subject', pattern: 'urgent' },
      ],
    }),
  );
  let r = decide(c, STRANGER, message([...GOOD.slice(0, 3), ['Subject', 'Cheap VIAGRA, urgent']]));
  assert.deepEqual(r.verdict, { tag: 'pass' });
  assert.deepEqual(r.addHeaders, [
    { name: TAG_HEADER, value: 'spammy subject, Subject matches rule 3' },
  ]);
  r = decide(c, STRANGER, message([...GOOD, ['x-mailer', 'BulkMailer 3'], ['Subject', 'viagra']]));
  assert.deepEqual(r.verdict, {
    tag: 'reject',
    val: { code: 554, enhanced: '5.7.1', text: 'Message rejected: bulk mailer' },
  });
  assert.deepEqual(r.addHeaders, []);
  // Every value of a repeated header is tried.
  r = decide(c, STRANGER, message([...GOOD, ['X-Mailer', 'ok'], ['X-Mailer', 'BulkMailer']]));
  assert.equal(r.verdict.tag, 'reject');
});

test('spoofed local From from an unauthenticated, untrusted client', () => {
  const c = parseConfig(
    JSON.stringify({
      local_domains: ['Example.ORG.'],
      trusted_networks: ['198.51.100.0/24', '2001:db8::/32'],
      action: 'reject',
    }),
  );
  const spoof = [['From', '"Boss (CEO)" <Boss@EXAMPLE.org>'], ...GOOD.slice(1)];
  let r = decide(c, STRANGER, message(spoof));
  assert.equal(r.verdict.tag, 'reject');
  assert.equal(
    r.verdict.val.text,
    'Message rejected: local sender domain example.org from an unauthenticated client',
  );
  for (const session of [
    { clientIp: '192.0.2.7', authUser: 'boss' },
    { clientIp: '198.51.100.9', authUser: undefined },
    { clientIp: '2001:db8:5::1', authUser: undefined },
    { clientIp: '::ffff:198.51.100.1', authUser: undefined },
  ]) {
    assert.equal(decide(c, session, message(spoof)).verdict.tag, 'pass', JSON.stringify(session));
  }
  // Foreign domains and look-alikes in display names or comments are fine.
  for (const from of [
    'alice@example.net',
    '"boss@example.org" <boss@evil.test>',
    'boss@evil.test (boss@example.org)',
    'boss@sub.example.org',
  ]) {
    r = decide(c, STRANGER, message([['From', from], ...GOOD.slice(1)]));
    assert.equal(r.verdict.tag, 'pass', from);
  }
  // Without local_domains the check has nothing to compare with.
  assert.equal(decide(parseConfig('{}'), STRANGER, message(spoof)).verdict.tag, 'pass');
});

test('address domains', () => {
  assert.deepEqual(addressDomains('A <a@X.org>, b@y.org'), ['x.org']);
  assert.deepEqual(addressDomains('a@x.org, B@Y.ORG.'), ['x.org', 'y.org']);
  assert.deepEqual(addressDomains('group: a@x.org, b@y.org;'), ['x.org', 'y.org']);
  assert.deepEqual(addressDomains('"a@q.org" <a\\@b@z.org>'), ['z.org']);
  assert.deepEqual(addressDomains('undisclosed-recipients:;'), []);
});

test('IP addresses and networks', () => {
  assert.deepEqual(parseIp('192.0.2.1'), { version: 4, bytes: [192, 0, 2, 1] });
  assert.deepEqual(parseIp('::ffff:10.0.0.1'), { version: 4, bytes: [10, 0, 0, 1] });
  assert.equal(parseIp('[::1]').version, 6);
  assert.equal(parseIp('fe80::1%eth0').version, 6);
  for (const bad of ['256.0.0.1', '1.2.3', '1::2::3', 'x', '', '1:2:3:4:5:6:7:8:9', '1.2.3.04444']) {
    assert.equal(parseIp(bad), null, bad);
  }
  const net = parseCidr('10.1.2.3/12');
  assert.ok(inNetwork(parseIp('10.15.255.255'), net));
  assert.ok(!inNetwork(parseIp('10.16.0.0'), net));
  assert.ok(inNetwork(parseIp('::1'), parseCidr('::1/128')));
  assert.ok(!inNetwork(parseIp('::2'), parseCidr('::1/128')));
  assert.ok(inNetwork(parseIp('2001:db8:ffff::1'), parseCidr('2001:db8::/32')));
  assert.ok(!inNetwork(parseIp('127.0.0.1'), parseCidr('::/0')));
  assert.ok(inNetwork(parseIp('127.0.0.1'), parseCidr('0.0.0.0/0')));
  assert.equal(parseCidr('10.0.0.0/33'), null);
  assert.equal(parseCidr('10.0.0.0/x'), null);
});

test('config errors name the offending keys', () => {
  const bad = (cfg, ...want) => {
    assert.throws(
      () => parseConfig(typeof cfg === 'string' ? cfg : JSON.stringify(cfg)),
      (e) => {
        assert.ok(e instanceof ConfigError);
        for (const w of want) assert.ok(e.message.includes(w), `${e.message} lacks ${w}`);
        return true;
      },
    );
  };
  bad({ rule: [], requre_date: true }, 'unknown configuration key(s): rule, requre_date');
  bad({ rules: [{ header: 'Subject', pattern: '(' }] }, 'rules[0].pattern is not a valid regular expression');
  bad({ rules: [{ header: 'Subject', pattern: 'x', flag: 'i' }] }, 'rules[0]: unknown key(s): flag');
  bad({ rules: [{ header: 'Subject', pattern: 'x', flags: 'g' }] }, 'rules[0].flags');
  bad({ rules: [{ header: 'Subject', pattern: 'x', action: 'drop' }] }, 'rules[0].action');
  bad({ rules: [{ header: 'Sub ject', pattern: 'x' }] }, 'rules[0].header');
  bad({ rules: [{ header: 'Subject' }] }, 'rules[0].pattern');
  bad({ rules: [{ header: 'Subject', pattern: 'x', text: 'a\nb' }] }, 'rules[0].text');
  bad({ rules: {} }, 'rules must be a list');
  bad({ action: 'discard' }, 'action must be');
  bad({ require_date: 'yes' }, 'require_date');
  bad({ local_domains: 'example.org' }, 'local_domains');
  bad({ trusted_networks: ['10.0.0.0/8', 'lan'] }, 'trusted_networks: "lan"');
  // Several problems are reported together.
  bad({ nope: 1, rules: [{ header: 'S', pattern: '[' }] }, 'nope', 'rules[0].pattern');
  bad('[]', 'must be a table');
  bad('{', 'not valid JSON');
  assert.equal(parseConfig('').action, 'tag');
});

test('long reasons are clipped to header and reply limits', () => {
  const text = 'x'.repeat(200);
  const rules = Array.from({ length: 10 }, (_, i) => ({ header: 'Subject', pattern: '', text: `${i}${text}`.slice(0, 200) }));
  const c = parseConfig(JSON.stringify({ rules }));
  const r = decide(c, STRANGER, message(GOOD));
  assert.ok(r.addHeaders[0].value.length <= 900);
  assert.ok(r.addHeaders[0].value.endsWith('...'));
});
