// Componentize plugin.js against wit/ world `subject-filter`. Called by
// build.sh: `node build.mjs <output.wasm>`. TOOLCHAIN_DIR, when set, names
// a folder whose node_modules holds @bytecodealliance/componentize-js (in
// the Postern repository: plugins/header-filter); otherwise this folder's
// node_modules is used. `http` and `fetch-event` are disabled so the
// component imports no wasi:http interfaces (Postern does not provide them).

import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs <output.wasm>');
  process.exit(2);
}

async function loadComponentize() {
  const dir = process.env.TOOLCHAIN_DIR;
  if (!dir) return import('@bytecodealliance/componentize-js');
  const pkg = join(dir, 'node_modules', '@bytecodealliance', 'componentize-js');
  const entry = JSON.parse(await readFile(join(pkg, 'package.json'), 'utf8')).exports.import;
  return import(pathToFileURL(join(pkg, entry)).href);
}

const { componentize } = await loadComponentize();
process.chdir(here);
const { component } = await componentize({
  sourcePath: join(here, 'plugin.js'),
  witPath: join(here, 'wit'),
  worldName: 'subject-filter',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
