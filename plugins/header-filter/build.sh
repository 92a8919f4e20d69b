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
out_dir="$root/target/plugins"
out="$out_dir/header-filter.wasm"

cd "$here"

# npm writes node_modules/.package-lock.json on every install; when it is
# newer than the committed lock file the tree matches the lock.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
    || [ ! -f node_modules/@bytecodealliance/componentize-js/package.json ]; then
    echo "header-filter: installing the JS toolchain (npm ci)" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
fi

deps="$here/wit/deps/postern-policy"
rm -rf "$here/wit/deps"
mkdir -p "$deps"
cp "$root"/wit/*.wit "$deps/"

inputs=("$here/plugin.js" "$here/filter.js" "$here/build.mjs" "$here/build.sh" "$here/wit/world.wit" \
    "$here/package-lock.json" "$root"/wit/*.wit)
if [ "${FORCE:-0}" != "1" ] && [ -f "$out" ]; then
    stale=0
    for f in "${inputs[@]}"; do
        if [ "$f" -nt "$out" ]; then stale=1; break; fi
    done
    if [ "$stale" = 0 ]; then
        echo "header-filter: $out is up to date" >&2
        exit 0
    fi
fi

mkdir -p "$out_dir"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
node build.mjs "$tmp"
mv -f "$tmp" "$out"
echo "header-filter: wrote $out ($(wc -c <"$out") bytes)" >&2
