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
out_dir="$root/target/plugins"
out="$out_dir/example-subject-filter.wasm"
marker=node_modules/@bytecodealliance/componentize-js/package.json

if [ -f "$here/$marker" ]; then
    toolchain="$here"
else
    toolchain="$root/plugins/header-filter"
    # The same freshness test as plugins/header-filter/build.sh.
    if [ ! -f "$toolchain/node_modules/.package-lock.json" ] \
        || [ "$toolchain/package-lock.json" -nt "$toolchain/node_modules/.package-lock.json" ] \
        || [ ! -f "$toolchain/$marker" ]; then
        echo "example-subject-filter: installing the JS toolchain in $toolchain (npm ci)" >&2
        (cd "$toolchain" && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi
fi

deps="$here/wit/deps/postern-policy"
rm -rf "$here/wit/deps"
mkdir -p "$deps"
cp "$root"/wit/*.wit "$deps/"

inputs=("$here/plugin.js" "$here/build.mjs" "$here/build.sh" "$here/wit/world.wit" "$here/package.json" \
    "$root"/wit/*.wit)
if [ "${FORCE:-0}" != "1" ] && [ -f "$out" ]; then
    stale=0
    for f in "${inputs[@]}"; do
        if [ "$f" -nt "$out" ]; then stale=1; break; fi
    done
    if [ "$stale" = 0 ]; then
        echo "example-subject-filter: $out is up to date" >&2
        exit 0
    fi
fi

mkdir -p "$out_dir"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
TOOLCHAIN_DIR="$toolchain" node "$here/build.mjs" "$tmp"
mv -f "$tmp" "$out"
echo "example-subject-filter: wrote $out ($(wc -c <"$out") bytes)" >&2
