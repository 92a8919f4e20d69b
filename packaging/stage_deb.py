#!/usr/bin/env python3
"""Stage what the Debian package ships besides the binary, from the outputs
of `make build`, into target/postern-deb/ (never committed):

  postern.toml  examples/production.toml with each [[plugin]] path pointed at
                /usr/lib/postern/plugins/ (comments and layout kept), with a
                header saying where it came from;
  plugins/      every component that file names, copied from the build.

The package's plugin set is what its configuration uses, so the two cannot
drift. Run by `make deb-package`; fails when a named component is not built."""

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "examples" / "production.toml"
OUT = ROOT / "target" / "postern-deb"
INSTALLED = "/usr/lib/postern/plugins"

HEADER = """\
# /etc/postern/postern.toml, installed by the postern Debian package from
# examples/production.toml: replace every example.org name, the networks and
# the certificate (postinst wrote a self-signed placeholder), then
#   postern check --config /etc/postern/postern.toml
#   systemctl enable --now postern
# Components are in /usr/lib/postern/plugins/.

"""


def main() -> int:
    text = SOURCE.read_text()
    plugins = tomllib.loads(text).get("plugin", [])
    if not plugins:
        print(f"stage_deb: {SOURCE} names no plugin", file=sys.stderr)
        return 1
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "plugins").mkdir(parents=True)
    for p in plugins:
        built = (SOURCE.parent / p["path"]).resolve()
        if not built.is_file():
            print(f"stage_deb: plugin {p['name']}: {built} is not built (run `make build`)", file=sys.stderr)
            return 1
        quoted = f'"{p["path"]}"'
        if text.count(quoted) != 1:
            print(f"stage_deb: {quoted} must appear exactly once in {SOURCE}", file=sys.stderr)
            return 1
        text = text.replace(quoted, f'"{INSTALLED}/{built.name}"')
        shutil.copyfile(built, OUT / "plugins" / built.name)
    installed = tomllib.loads(text)
    assert [p["path"] for p in installed["plugin"]] == [f"{INSTALLED}/{(SOURCE.parent / p['path']).name}"
                                                       for p in plugins]
    (OUT / "postern.toml").write_text(HEADER + text)
    print(f"stage_deb: {OUT / 'postern.toml'} and {len(plugins)} components in {OUT / 'plugins'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
