#!/usr/bin/env bash
# Build the greylist plugin (Python) into a WebAssembly component:
#   plugins/greylist/build.sh            -> target/plugins/greylist.wasm
# Installs the pinned componentize-py (plugins/build-lib.sh) into
# <repo>/.tools/py when it is missing or another version; needs only python3
# and pip. Skips the build when the component is newer than every input
# (FORCE=1 rebuilds). The `postern:policy` WIT package is copied into
# wit/deps/ (gitignored) from the repository's wit/ directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PLUGIN=greylist
. "$root/plugins/build-lib.sh"
out="$root/target/plugins/greylist.wasm"

tool="$(postern_componentize_py "$root")"
postern_wit_deps "$here" "$root"
postern_up_to_date "$out" "$here/app.py" "$here/greylist_logic.py" "$here/wit/world.wit" \
    "$here/build.sh" "$root/plugins/build-lib.sh" "$root"/wit/*.wit && exit 0
postern_componentize_python "$tool" "$here" greylist "$out" app.py greylist_logic.py
