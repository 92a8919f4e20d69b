// Example Postern plugin in JavaScript (see README.md): at DATA, refuses a
// message whose Subject contains one of `blocked_words` (case-insensitive)
// and adds an `X-Subject-Filter: checked` header to every other one. Exports
// `postern:policy/init` and `postern:policy/data-hook` (world
// `subject-filter` in wit/world.wit); built with componentize-js.
// Input: the borrowed message from the host; the operator's configuration.

import { log } from 'postern:policy/log@0.2.0';

// Per instance (every SMTP session gets a fresh one); set by `init`.
let blocked = [];

// A data-result may also change the fields the message arrived with
// (headerChanges), the envelope (envelopeChanges) or hold the message
// (quarantine: a reason); this plugin does none of that.
const NO_CHANGES = { headerChanges: [], envelopeChanges: [], quarantine: undefined };

export const init = {
  // `text` is `[plugin.config]` as JSON; an `err` refuses the configuration.
  init(text) {
    const config = JSON.parse(text);
    const unknown = Object.keys(config).filter((k) => k !== 'blocked_words');
    if (unknown.length) return { tag: 'err', val: `unknown key(s): ${unknown.join(', ')}` };
    const words = config.blocked_words ?? [];
    // Words appear in replies: printable ASCII only, so every reply is valid.
    if (!Array.isArray(words) || !words.every((w) => typeof w === 'string' && /^[\x21-\x7e]{1,50}$/.test(w))) {
      return { tag: 'err', val: 'blocked_words: a list of printable ASCII words (1-50 characters)' };
    }
    blocked = words.map((w) => w.toLowerCase());
    return { tag: 'ok', val: undefined };
  },
};

export const dataHook = {
  // `message` is a handle: only the header asked for is copied in.
  onData(session, message) {
    const subject = (message.header('Subject') ?? '').toLowerCase();
    const word = blocked.find((w) => subject.includes(w));
    if (word !== undefined) {
      log('info', 'message refused', [['word', word]]);
      const reply = { code: 554, enhanced: '5.7.1', text: `Message refused: subject contains "${word}"` };
      return { verdict: { tag: 'reject', val: reply }, addHeaders: [], ...NO_CHANGES };
    }
    return { verdict: { tag: 'pass' }, addHeaders: [{ name: 'X-Subject-Filter', value: 'checked' }], ...NO_CHANGES };
  },
};
