"""`postern plugin new`, walked through for each language as a new plugin
author would: the generated folder's unit tests pass against the fake host
(kv and dns included), its build script makes a component wherever the
folder lands (outside any checkout, or inside one, where `make build` and
`make test` pick it up), and a running server hot-loads it with
`postern reload --config` and answers with its verdicts, the kv-counted
one included. Refusals (a bad name, an unknown stage, an existing folder)
write nothing.

The Rust walk-through builds the SDK natively and for wasm32-wasip2 in
target/scaffold-test (kept between runs, with the workspace's Cargo.lock);
the script plugins use the checkout's componentize-py and JS toolchain."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import BIN, ROOT, TARGET, ehlo, render_config

SCAFFOLD_TARGET = TARGET / "scaffold-test"
COMPONENTIZE_PY = ROOT / ".tools" / "py" / "bin" / "componentize-py"
JS_TOOLCHAIN = ROOT / "plugins" / "header-filter"


def run(cmd, cwd, env=None, timeout=900):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, f"{cmd} in {cwd}:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def new(parent, name, lang, *stages, extra=()):
    args = [str(BIN), "plugin", "new", name, "--lang", lang, "--dir", str(parent), *extra]
    for s in stages:
        args += ["--stage", s]
    out = run(args, parent)
    assert f"wrote {parent / name}" in out, out
    return parent / name


def unit_test_and_build(lang, folder):
    """The commands the generated README gives, with this checkout's
    toolchains; returns the component's path."""
    if lang == "rust":
        shutil.copy(ROOT / "Cargo.lock", folder / "Cargo.lock")
        env = {"CARGO_TARGET_DIR": str(SCAFFOLD_TARGET)}
        out = run(["cargo", "test", "--release"], folder, env)
        assert "test result: ok." in out and " 0 failed" in out, out
        assert "senders_are_counted_in_kv_per_hour ... ok" in out, out
        assert "sender_domains_are_looked_up_in_dns ... ok" in out, out
        run(["cargo", "build", "--release", "--target", "wasm32-wasip2"], folder, env)
        return SCAFFOLD_TARGET / "wasm32-wasip2" / "release" / f"{folder.name.replace('-', '_')}.wasm"
    if lang == "python":
        out = run(["python3", "-m", "unittest", "-v"], folder)
        for t in ("test_senders_are_counted_in_kv_per_hour", "test_sender_domains_are_looked_up_in_dns"):
            assert re.search(rf"^{t} .*\.\.\. ok$", out, re.M), out
        assert out.rstrip().endswith("OK"), out
        out = run(["./build.sh"], folder, {"COMPONENTIZE_PY": str(COMPONENTIZE_PY)})
    else:
        out = run(["node", "--test"], folder)
        assert "# fail 0" in out and "ok 3 - senders are counted in kv per hour" in out, out
        assert "sender domains are looked up in DNS" in out, out
        out = run(["./build.sh"], folder, {"TOOLCHAIN_DIR": str(JS_TOOLCHAIN)})
    return Path(out.split("wrote ")[-1].split(" (")[0].strip())


@pytest.mark.parametrize("lang,stage", [("rust", "connect"), ("python", "rcpt-to"), ("javascript", "data")])
def test_from_plugin_new_to_a_hot_loaded_verdict(start, tmp_path, lang, stage):
    name = f"walk-{lang}"
    folder = new(tmp_path, name, lang, "mail-from", stage)
    assert (folder / "README.md").read_text().count("postern reload --config") == 1
    wasm = unit_test_and_build(lang, folder)
    assert wasm.is_file(), wasm

    srv = start()
    other = tmp_path / "with-plugin.toml"
    entry = {"name": name, "path": str(wasm), "capabilities": ["kv", "dns"], "max_memory": "64MiB",
             "config": {"blocked_domains": [f"{lang}.example"], "max_per_sender_per_hour": 1}}
    # The server's own file plus the new plugin.
    other.write_text(srv.config_path.read_text() + "\n" + render_config({}, [entry]).replace("[server]\n", "", 1))
    check = subprocess.run([str(BIN), "check", "--config", str(other)], capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0 and "warning" not in check.stderr, check.stdout + check.stderr
    assert f"stages: {stage if stage == 'connect' else 'mail-from'}" in check.stdout, check.stdout

    c = ehlo(srv.port)
    assert c.cmd(f"MAIL FROM:<x@{lang}.example>")[0] == 250      # not loaded yet
    c.close()
    r = subprocess.run([str(BIN), "reload", "--config", str(other)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and f"generation 2 from {other}" in r.stdout, r.stdout + r.stderr

    c = ehlo(srv.port)
    code, text = c.cmd(f"MAIL FROM:<x@{lang}.example>")
    assert (code, text) == (550, f"5.7.1 Sender domain refused by {name}"), text
    # The per-sender rate, counted in the server's kv store: one, then 451.
    assert c.cmd("MAIL FROM:<a@ok.example>")[0] == 250
    assert c.cmd("RSET")[0] == 250
    code, text = c.cmd("MAIL FROM:<a@ok.example>")
    assert code == 451 and text.startswith("4.7.1 "), text
    c.close()


def fake_checkout(tmp_path):
    """A directory with what marks a Postern checkout (plugins/build-lib.sh,
    wit/) and a workspace Cargo.toml."""
    co = tmp_path / "checkout"
    (co / "plugins").mkdir(parents=True)
    shutil.copy(ROOT / "plugins" / "build-lib.sh", co / "plugins" / "build-lib.sh")
    shutil.copytree(ROOT / "wit", co / "wit")
    (co / "Cargo.toml").write_text('[workspace]\nresolver = "3"\nmembers = [\n    "host/a",\n]\n')
    return co


def test_inside_a_checkout_the_folder_joins_the_build(tmp_path):
    """Under a checkout's plugins/: a Rust crate becomes a workspace member
    (what `make build`/`make test` build and test) on the checkout's serde;
    a Python plugin's build.sh writes <checkout>/target/plugins/NAME.wasm
    (where the Makefile's script-plugin build puts components), refreshing
    wit/deps from the checkout's wit/."""
    co = fake_checkout(tmp_path)
    crate = new(co / "plugins", "in-tree", "rust", "rcpt-to", extra=["--sdk", str(ROOT / "plugins" / "sdk")])
    manifest = (crate / "Cargo.toml").read_text()
    assert "serde = { workspace = true }" in manifest and "[workspace]" not in manifest, manifest
    assert '"host/a",\n    "plugins/in-tree",\n]' in (co / "Cargo.toml").read_text()
    assert "impl RcptTo for InTree" in (crate / "src" / "lib.rs").read_text()
    assert "kv::" not in (crate / "src" / "lib.rs").read_text()     # no MAIL FROM example asked for

    py = new(co / "plugins", "in-tree-py", "python", "helo")
    world = (py / "wit" / "world.wit").read_text()
    assert "import postern:policy/log@0.2.0;" in world and "/kv@" not in world, world
    run(["python3", "-m", "unittest"], py)
    (py / "wit" / "deps" / "postern-policy" / "host.wit").write_text("stale")
    run(["./build.sh"], py, {"COMPONENTIZE_PY": str(COMPONENTIZE_PY)})
    assert (co / "target" / "plugins" / "in-tree-py.wasm").is_file()
    assert (py / "wit" / "deps" / "postern-policy" / "host.wit").read_text() == (ROOT / "wit" / "host.wit").read_text()


@pytest.mark.parametrize("args,error", [
    (["Bad-Name", "--lang", "python"], 'plugin name "Bad-Name": use lower-case words'),
    (["a-2", "--lang", "python"], 'plugin name "a-2"'),
    (["ok", "--lang", "python", "--stage", "rcpt"], 'unknown stage "rcpt" (stages: connect, helo, auth'),
    (["ok", "--lang", "cobol"], "invalid value 'cobol'"),
    (["ok", "--lang", "rust", "--sdk", "/nonexistent"], "--sdk /nonexistent: not the postern-sdk crate"),
])
def test_refusals_write_nothing(tmp_path, args, error):
    r = subprocess.run([str(BIN), "plugin", "new", *args, "--dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and error in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_left_alone(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    r = subprocess.run([str(BIN), "plugin", "new", "taken", "--lang", "javascript", "--dir", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "already exists: nothing was written" in r.stderr, r.stderr
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["mine.txt"]
