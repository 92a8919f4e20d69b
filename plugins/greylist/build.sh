#!/usr/bin/env bash
# Build the greylist plugin (Python) into a WebAssembly component:
#   plugins/greylist/build.sh            -> target/plugins/greylist.wasm
# Installs the pinned componentize-py into <repo>/.tools/py (a venv) when it
# is missing or another version; needs only python3 and pip (22.3+ when the
# venv module lacks ensurepip). Skips the build when the component is newer
# than every input (FORCE=1 rebuilds).
# The `postern:policy` WIT package is copied into wit/deps/ (gitignored) from
# the repository's wit/ directory on every build.
set -euo pipefail

COMPONENTIZE_PY_VERSION="0.25.1"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/.tools/py"
out_dir="$root/target/plugins"
out="$out_dir/greylist.wasm"
tool="$venv/bin/componentize-py"

installed_version() {
    [ -x "$tool" ] || return 1
    "$tool" --version 2>/dev/null | awk '{print $2}'
}

if [ "$(installed_version || true)" != "$COMPONENTIZE_PY_VERSION" ]; then
    echo "greylist: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv" >&2
    mkdir -p "$root/.tools"
    if [ ! -x "$venv/bin/python3" ]; then
        # Without ensurepip (Debian's python3 without python3-venv) the venv
        # is made without pip and the system pip installs into it.
        python3 -m venv "$venv" 2>/dev/null || {
            rm -rf "$venv"
            python3 -m venv --without-pip "$venv"
        }
    fi
    if "$venv/bin/python3" -m pip --version >/dev/null 2>&1; then
        "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
            "componentize-py==$COMPONENTIZE_PY_VERSION"
    else
        python3 -m pip --python "$venv/bin/python3" install --quiet --disable-pip-version-check \
            "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
    if [ "$(installed_version || true)" != "$COMPONENTIZE_PY_VERSION" ]; then
        echo "greylist: componentize-py $COMPONENTIZE_PY_VERSION did not install" >&2
        exit 1
    fi
fi

# The contract as a WIT dependency (refreshed every time: cheap, and never stale).
deps="$here/wit/deps/postern-policy"
rm -rf "$here/wit/deps"
mkdir -p "$deps"
cp "$root"/wit/*.wit "$deps/"

inputs=("$here/app.py" "$here/greylist_logic.py" "$here/wit/world.wit" "$here/build.sh" "$root"/wit/*.wit)
if [ "${FORCE:-0}" != "1" ] && [ -f "$out" ]; then
    stale=0
    for f in "${inputs[@]}"; do
        if [ "$f" -nt "$out" ]; then stale=1; break; fi
    done
    if [ "$stale" = 0 ]; then
        echo "greylist: $out is up to date" >&2
        exit 0
    fi
fi

mkdir -p "$out_dir"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# Run from a scratch copy of the sources only, so nothing else in the plugin
# folder (tests, caches) can end up in the component.
src="$(mktemp -d)"
trap 'rm -f "$tmp"; rm -rf "$src"' EXIT
cp "$here/app.py" "$here/greylist_logic.py" "$src/"
(
    cd "$src"
    # Keep componentize-py from adding this venv's site-packages (the tool
    # itself) to the component's Python path.
    unset VIRTUAL_ENV
    "$tool" -q -d "$here/wit" -w greylist componentize -p "$src" app -o "$tmp"
)
mv -f "$tmp" "$out"
echo "greylist: wrote $out ($(wc -c <"$out") bytes)" >&2
