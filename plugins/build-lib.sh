# Shared steps of the build.sh scripts of non-Rust plugins (plugins/greylist,
# plugins/header-filter, examples/plugins/{python,javascript}). Sourced, not
# run: `. "$root/plugins/build-lib.sh"`. Every function prefixes its messages
# with $PLUGIN (set by the caller).

# The one componentize-py version every Python plugin is built with.
COMPONENTIZE_PY_VERSION="0.25.1"

# Copy the `postern:policy` WIT package into <dir>/wit/deps/ (gitignored),
# refreshed every time: cheap, and never stale.
postern_wit_deps() { # <plugin dir> <repo root>
    rm -rf "$1/wit/deps"
    mkdir -p "$1/wit/deps/postern-policy"
    cp "$2"/wit/*.wit "$1/wit/deps/postern-policy/"
}

# True (and says so) when <out> exists and is newer than every input, unless
# FORCE=1.
postern_up_to_date() { # <out> <input>...
    local out=$1 f
    shift
    [ "${FORCE:-0}" != "1" ] && [ -f "$out" ] || return 1
    for f in "$@"; do
        [ "$f" -nt "$out" ] && return 1
    done
    echo "$PLUGIN: $out is up to date" >&2
}

# Install the pinned componentize-py into <repo>/.tools/py (a venv) when it is
# missing or another version; needs only python3 and pip (22.3+ when the venv
# module lacks ensurepip). Prints the tool's path.
postern_componentize_py() { # <repo root>
    local venv="$1/.tools/py"
    local tool="$venv/bin/componentize-py"
    local pkg="componentize-py==$COMPONENTIZE_PY_VERSION"
    if [ "$("$tool" --version 2>/dev/null | awk '{print $2}')" != "$COMPONENTIZE_PY_VERSION" ]; then
        echo "$PLUGIN: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv" >&2
        mkdir -p "$1/.tools"
        if [ ! -x "$venv/bin/python3" ]; then
            # Without ensurepip (Debian's python3 without python3-venv) the venv
            # is made without pip and the system pip installs into it.
            python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; python3 -m venv --without-pip "$venv"; }
        fi
        if "$venv/bin/python3" -m pip --version >/dev/null 2>&1; then
            "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "$pkg" >&2
        else
            python3 -m pip --python "$venv/bin/python3" install --quiet --disable-pip-version-check "$pkg" >&2
        fi
        if [ "$("$tool" --version 2>/dev/null | awk '{print $2}')" != "$COMPONENTIZE_PY_VERSION" ]; then
            echo "$PLUGIN: componentize-py $COMPONENTIZE_PY_VERSION did not install" >&2
            return 1
        fi
    fi
    echo "$tool"
}

# `npm ci` in <dir> when its node_modules is missing or older than its lock
# file (npm writes node_modules/.package-lock.json on every install).
postern_npm_toolchain() { # <dir with package-lock.json>
    if [ ! -f "$1/node_modules/.package-lock.json" ] \
        || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ] \
        || [ ! -f "$1/node_modules/@bytecodealliance/componentize-js/package.json" ]; then
        echo "$PLUGIN: installing the JS toolchain in $1 (npm ci)" >&2
        (cd "$1" && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi
}

# Componentize the Python modules <module>... of <plugin dir> (world <world>,
# entry module `app`) into <out>, from a scratch copy of those files only, so
# nothing else in the folder (tests, caches) ends up in the component.
postern_componentize_python() { # <tool> <plugin dir> <world> <out> <module file>...
    local tool=$1 here=$2 world=$3 out=$4 src
    shift 4
    src="$(mktemp -d)"
    mkdir -p "$(dirname "$out")"
    (
        trap 'rm -rf "$src"; rm -f "$out.tmp.$$"' EXIT
        for f in "$@"; do cp "$here/$f" "$src/"; done
        cd "$src"
        # Keep componentize-py from adding the tool's venv site-packages to
        # the component's Python path.
        unset VIRTUAL_ENV
        "$tool" -q -d "$here/wit" -w "$world" componentize -p "$src" app -o "$out.tmp.$$"
        mv -f "$out.tmp.$$" "$out"
    )
    echo "$PLUGIN: wrote $out ($(wc -c <"$out") bytes)" >&2
}

# Run <plugin dir>/build.mjs (componentize-js) into a temporary file and move
# it to <out> when it succeeds; VAR=value arguments go into its environment.
postern_componentize_js() { # <plugin dir> <out> [VAR=value ...]: runs <plugin dir>/build.mjs
    local here=$1 out=$2
    shift 2
    mkdir -p "$(dirname "$out")"
    (
        trap 'rm -f "$out.tmp.$$"' EXIT
        cd "$here"
        env "$@" node build.mjs "$out.tmp.$$"
        mv -f "$out.tmp.$$" "$out"
    )
    echo "$PLUGIN: wrote $out ($(wc -c <"$out") bytes)" >&2
}
