#!/usr/bin/env bash
# Build the header-filter plugin (JavaScript) into a WebAssembly component:
#   plugins/header-filter/build.sh       -> target/plugins/header-filter.wasm
# Installs the pinned toolchain (package.json / package-lock.json:
# @bytecodealliance/componentize-js, @bytecodealliance/jco) into this
# folder's node_modules with `npm ci` when it is missing or out of date; needs
# only node (20+) and npm. Skips the build when the component is newer than
# every input (FORCE=1 rebuilds). The `postern:policy` WIT package is copied
# into wit/deps/ (gitignored) from the repository's wit/ directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PLUGIN=header-filter
. "$root/plugins/build-lib.sh"
out="$root/target/plugins/header-filter.wasm"

postern_npm_toolchain "$here"
postern_wit_deps "$here" "$root"
postern_up_to_date "$out" "$here/plugin.js" "$here/filter.js" "$here/build.mjs" "$here/build.sh" \
    "$here/wit/world.wit" "$here/package-lock.json" "$root/plugins/build-lib.sh" "$root"/wit/*.wit && exit 0
postern_componentize_js "$here" "$out"
