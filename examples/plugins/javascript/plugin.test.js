// Unit tests of the example plugin (plugin.js) against the fake Postern host
// of plugins/sdk-js/postern-testing.mjs; plain Node, no wasm toolchain:
// `cd examples/plugins/javascript && node --test`.

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

// First: registers the postern:policy/* modules plugin.js imports.
import { exportResult, host, message, session, verdict } from '../../../plugins/sdk-js/postern-testing.mjs';

const plugin = await import('./plugin.js');

beforeEach(() => host.reset());

const init = (config) => exportResult(plugin.init.init, JSON.stringify(config));
const onData = (raw) => plugin.dataHook.onData(session(), message(raw));

test('init accepts a good configuration', () => {
  assert.deepEqual(init({}), { tag: 'ok', val: undefined });
  assert.deepEqual(init({ blocked_words: ['viagra', 'Casino'] }), { tag: 'ok', val: undefined });
});

test('init refuses unknown keys and bad words', () => {
  assert.deepEqual(init({ blocked_words: [], typo: 1 }), { tag: 'err', val: 'unknown key(s): typo' });
  const bad = { tag: 'err', val: 'blocked_words: a list of printable ASCII words (1-50 characters)' };
  for (const words of ['casino', [''], ['two words'], ['x'.repeat(51)], [1]]) {
    assert.deepEqual(init({ blocked_words: words }), bad, JSON.stringify(words));
  }
});

test('a Subject with a blocked word is rejected and logged', () => {
  init({ blocked_words: ['Casino'] });
  const r = onData('From: a@example.net\nSubject: Best CASINO offers\n\nHello\n');
  assert.deepEqual(verdict(r), ['reject', 554, '5.7.1', 'Message refused: subject contains "casino"']);
  assert.deepEqual(r.addHeaders, []);
  assert.deepEqual(host.logs, [{ level: 'info', message: 'message refused', fields: [['word', 'casino']] }]);
});

test('other messages pass and get X-Subject-Filter', () => {
  init({ blocked_words: ['casino'] });
  for (const raw of ['Subject: hello\n\nbody\n', 'From: a@example.net\n\nno subject\n', 'Subject: cas\n ino\n\n']) {
    const r = onData(raw);
    assert.deepEqual(verdict(r), ['pass', undefined, undefined, undefined], raw);
    assert.deepEqual(r.addHeaders, [{ name: 'X-Subject-Filter', value: 'checked' }]);
    assert.deepEqual([r.headerChanges, r.envelopeChanges, r.quarantine], [[], [], undefined]);
  }
  assert.equal(host.logs.length, 0);
});
