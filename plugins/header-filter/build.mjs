// Componentize plugin.js (and the modules it imports) against wit/ world
// `header-filter`. Called by build.sh: `node build.mjs <output.wasm>`.
// `http` and `fetch-event` are disabled so the component imports no
// wasi:http interfaces (the Postern host links only WASI preview 2 CLI,
// clocks, random, I/O, filesystem and sockets, all of them deny-by-default).

import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { componentize } from '@bytecodealliance/componentize-js';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs <output.wasm>');
  process.exit(2);
}
process.chdir(here);
const { component } = await componentize({
  sourcePath: join(here, 'plugin.js'),
  witPath: join(here, 'wit'),
  worldName: 'header-filter',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
