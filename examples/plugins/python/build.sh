#!/usr/bin/env bash
# Build the example Python plugin into a WebAssembly component:
#   examples/plugins/python/build.sh     -> target/plugins/example-sender-blocklist.wasm
# Uses the componentize-py that plugins/greylist/build.sh pins and installs
# into <repo>/.tools/py (a venv), installing it the same way when it is
# missing or another version. Skips the build when the component is newer
# than every input (FORCE=1 rebuilds). The `postern:policy` WIT package is
# copied into wit/deps/ (gitignored) from the repository's wit/ directory.
set -euo pipefail

# Keep in step with plugins/greylist/build.sh (tests/e2e/test_examples_plugins.py checks).
COMPONENTIZE_PY_VERSION="0.25.1"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$root/.tools/py"
out_dir="$root/target/plugins"
out="$out_dir/example-sender-blocklist.wasm"
tool="$venv/bin/componentize-py"

installed_version() {
    [ -x "$tool" ] || return 1
    "$tool" --version 2>/dev/null | awk '{print $2}'
}

if [ "$(installed_version || true)" != "$COMPONENTIZE_PY_VERSION" ]; then
    echo "example-sender-blocklist: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv" >&2
    mkdir -p "$root/.tools"
    if [ ! -x "$venv/bin/python3" ]; then
        python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; python3 -m venv --without-pip "$venv"; }
    fi
    if "$venv/bin/python3" -m pip --version >/dev/null 2>&1; then
        "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
            "componentize-py==$COMPONENTIZE_PY_VERSION"
    else
        python3 -m pip --python "$venv/bin/python3" install --quiet --disable-pip-version-check \
            "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
    if [ "$(installed_version || true)" != "$COMPONENTIZE_PY_VERSION" ]; then
        echo "example-sender-blocklist: componentize-py $COMPONENTIZE_PY_VERSION did not install" >&2
        exit 1
    fi
fi

# The contract as a WIT dependency (refreshed every time: cheap, never stale).
deps="$here/wit/deps/postern-policy"
rm -rf "$here/wit/deps"
mkdir -p "$deps"
cp "$root"/wit/*.wit "$deps/"

inputs=("$here/app.py" "$here/wit/world.wit" "$here/build.sh" "$root"/wit/*.wit)
if [ "${FORCE:-0}" != "1" ] && [ -f "$out" ]; then
    stale=0
    for f in "${inputs[@]}"; do
        if [ "$f" -nt "$out" ]; then stale=1; break; fi
    done
    if [ "$stale" = 0 ]; then
        echo "example-sender-blocklist: $out is up to date" >&2
        exit 0
    fi
fi

mkdir -p "$out_dir"
tmp="$out.tmp.$$"
# Componentize from a scratch copy of the sources, so nothing else in this
# folder (caches, notes) ends up in the component.
src="$(mktemp -d)"
trap 'rm -f "$tmp"; rm -rf "$src"' EXIT
cp "$here/app.py" "$src/"
(
    cd "$src"
    unset VIRTUAL_ENV   # keep the tool's own site-packages out of the component
    "$tool" -q -d "$here/wit" -w sender-blocklist componentize -p "$src" app -o "$tmp"
)
mv -f "$tmp" "$out"
echo "example-sender-blocklist: wrote $out ($(wc -c <"$out") bytes)" >&2
