#!/usr/bin/env bash
# Build the example Python plugin into a WebAssembly component:
#   examples/plugins/python/build.sh     -> target/plugins/example-sender-blocklist.wasm
# Uses the componentize-py pinned in plugins/build-lib.sh (the one greylist is
# built with, in the venv <repo>/.tools/py), installing it when it is missing
# or another version. Skips the build when the component is newer than every
# input (FORCE=1 rebuilds). The `postern:policy` WIT package is copied into
# wit/deps/ (gitignored) from the repository's wit/ directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
PLUGIN=example-sender-blocklist
. "$root/plugins/build-lib.sh"
out="$root/target/plugins/example-sender-blocklist.wasm"

tool="$(postern_componentize_py "$root")"
postern_wit_deps "$here" "$root"
postern_up_to_date "$out" "$here/app.py" "$here/wit/world.wit" "$here/build.sh" \
    "$root/plugins/build-lib.sh" "$root"/wit/*.wit && exit 0
postern_componentize_python "$tool" "$here" sender-blocklist "$out" app.py
