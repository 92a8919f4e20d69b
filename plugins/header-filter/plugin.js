// Component entry point of the header-filter plugin: exports
// `postern:policy/init`, `postern:policy/data-hook` and `postern:policy/recycle`
// (world `header-filter` in wit/world.wit) and adapts them to the binding-free logic in filter.js.
// Built with componentize-js. Input: the session and the message, both
// borrowed from the host; the operator's configuration.

import { log } from 'postern:policy/log@0.2.0';
import { ConfigError, decide, parseConfig } from './filter.js';

// Per instance; set by `init`. It is all the module keeps, and it is the
// same for every session: `recycle` lets the host reuse the instance.
let config = null;

// The data-result fields this plugin leaves empty: no changes to the fields
// the message arrived with or to the envelope, no quarantine.
const NO_CHANGES = { headerChanges: [], envelopeChanges: [], quarantine: undefined };

export const init = {
  init(text) {
    try {
      config = parseConfig(text);
      return { tag: 'ok', val: undefined };
    } catch (e) {
      if (e instanceof ConfigError) return { tag: 'err', val: e.message };
      throw e;
    }
  },
};

export const dataHook = {
  onData(session, message) {
    if (config === null) config = parseConfig('{}');
    // The session is a host resource (postern:policy@0.2.0): filter.js takes
    // the two facts it needs as plain values.
    const facts = { clientIp: session.clientIp(), authUser: session.authUser() };
    const result = decide(config, facts, message);
    if (result.reasons.length) {
      log('info', `header filter: ${result.verdict.tag === 'reject' ? 'rejected' : 'tagged'}`, [
        ['reasons', result.reasons.join(', ')],
      ]);
    }
    return { verdict: result.verdict, addHeaders: result.addHeaders, ...NO_CHANGES };
  },
};

// Nothing of a session is kept between calls, so the instance may serve the
// next session: this spares it the JavaScript engine's start-up and `init`.
export const recycle = {
  recycle() {
    return config !== null;
  },
};

// Warm-up at build time. componentize-js runs this module's top level while
// it snapshots the engine (Wizer), so the functions below are parsed and
// compiled into the snapshot instead of on every fresh instance (instances
// are recycled across sessions, but each new one still starts here).
(() => {
  const fake = {
    header: (name) => (name === 'From' ? 'a <a@example.org>' : null),
    headerAll: () => ['x'],
    headers: () => [],
  };
  const session = { clientIp: '192.0.2.1', authUser: null };
  try {
    const warm = parseConfig(JSON.stringify({
      rules: [{ header: 'Subject', pattern: 'x', flags: 'i', action: 'tag' }],
      local_domains: ['example.org'],
    }));
    decide(warm, session, fake);
    decide(parseConfig('{}'), session, fake);
  } catch (_) {
    // Never fail the build over a warm-up.
  }
})();
