#!/usr/bin/env bash
# Build the example JavaScript plugin into a WebAssembly component:
#   examples/plugins/javascript/build.sh -> target/plugins/example-subject-filter.wasm
# The toolchain (@bytecodealliance/componentize-js and what it needs, the
# versions pinned in package.json) comes from this folder's node_modules
# when you installed it here (`npm install`, as in a copy of this example
# outside the repository); otherwise from plugins/header-filter, which pins
# the same versions in its lock file: it is installed there with `npm ci`
# when missing or stale, so a checkout installs the JS toolchain once.
# Skips the build when the component is newer than every input (FORCE=1
# rebuilds). The `postern:policy` WIT package is copied into wit/deps/
# (gitignored) from the repository's wit/ directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
PLUGIN=example-subject-filter
. "$root/plugins/build-lib.sh"
out="$root/target/plugins/example-subject-filter.wasm"

if [ -f "$here/node_modules/@bytecodealliance/componentize-js/package.json" ]; then
    toolchain="$here"
else
    toolchain="$root/plugins/header-filter"
    postern_npm_toolchain "$toolchain"
fi
postern_wit_deps "$here" "$root"
postern_up_to_date "$out" "$here/plugin.js" "$here/build.mjs" "$here/build.sh" "$here/wit/world.wit" \
    "$here/package.json" "$root/plugins/build-lib.sh" "$root"/wit/*.wit && exit 0
postern_componentize_js "$here" "$out" TOOLCHAIN_DIR="$toolchain"
