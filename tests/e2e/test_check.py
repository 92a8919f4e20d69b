"""`postern check` and `postern serve` refuse bad configurations and bad
plugin files with precise errors naming the file, line or plugin."""

import subprocess

import pytest
from harness import BIN, render_config, wasm


def check(tmp_path, text):
    p = tmp_path / "postern.toml"
    p.write_text(text)
    r = subprocess.run([str(BIN), "check", "--config", str(p)], capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr, p


# allow_root: these files are also served (test_serve_refuses_bad_plugin_too),
# as root on CI machines.
BASE = {"hostname": "mx.test", "listen": ["127.0.0.1:2525"], "local_domains": ["example.test"], "allow_root": True}


def test_good_config_passes(tmp_path):
    text = render_config(BASE, [{"name": "probe", "path": str(wasm("test-probe")), "config": {"tag": "x"}}])
    code, out, _ = check(tmp_path, text)
    assert code == 0, out
    assert "plugin probe" in out and "connect" in out


def test_example_config_passes():
    root = BIN.parents[2]
    subprocess.run([str(BIN), "gen-cert", "--hostname", "mx.example.test", "--dir", "examples/data/tls"],
                   cwd=root, check=True, capture_output=True)
    r = subprocess.run([str(BIN), "check", "--config", "examples/postern.toml"], capture_output=True, text=True,
                       cwd=BIN.parents[2], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # The shipped configuration grants or declines every capability its
    # plugins import: a first `check` prints no warning.
    assert "warning" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    "capabilities,warned",
    [([], ["dns", "kv"]), (["kv"], ["dns"]), (["kv", "-dns"], []), (["kv", "dns"], [])],
)
def test_imported_but_ungranted_capability_warns(tmp_path, capabilities, warned):
    """dnsbl imports dns and kv: each it is neither granted nor declined
    ("-dns") is named in a warning before the first call answers `denied`;
    the configuration still passes."""
    text = render_config(BASE, [{"name": "bl", "path": str(wasm("dnsbl")), "capabilities": capabilities,
                                 "config": {"zones": [{"zone": "bl.example.test"}]}}])
    code, out, _ = check(tmp_path, text)
    assert code == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("postern: warning:")]
    if not warned:
        assert warnings == [], out
        return
    assert len(warnings) == 1, out
    imports = ", ".join(f"postern:policy/{c}" for c in warned)
    assert f"plugin bl imports {imports} without the capability" in warnings[0], out
    assert "add " + ", ".join(f'"{c}"' for c in warned) + " to capabilities" in warnings[0], out


def test_granting_and_declining_one_capability_is_refused(tmp_path):
    text = render_config(BASE, [{"name": "bl", "path": str(wasm("dnsbl")), "capabilities": ["dns", "-dns"],
                                 "config": {"zones": [{"zone": "bl.example.test"}]}}])
    code, out, _ = check(tmp_path, text)
    assert code != 0 and 'plugin "bl"' in out and 'capability "dns" both granted and declined' in out, out


@pytest.mark.parametrize(
    "text,want",
    [
        ("[server]\nhostname = \"h\"\nlisten = [\"127.0.0.1:1\"]\nlocal_domains = []\ntypo_key = 1\n",
         ":5: unknown field `typo_key`"),
        ("[server]\nhostname = \"h\"\nlisten = [\"not-an-address\"]\nlocal_domains = []\n", ":3: server.listen"),
        ("[server\n", ":1:"),
        ("[server]\nhostname = \"h\"\nlisten = [\"127.0.0.1:1\"]\nlocal_domains = []\n[[plugin]]\nname = \"x\"\n"
         "path = \"x.wasm\"\nmode = \"sometimes\"\n", ":8: unknown variant `sometimes`"),
        ("[server]\nhostname = \"h\"\nlisten = [\"127.0.0.1:1\"]\nlocal_domains = []\ncommand_timeout = \"later\"\n",
         ":5: server.command_timeout: invalid duration"),
    ],
)
def test_bad_config_names_file_and_line(tmp_path, text, want):
    code, out, p = check(tmp_path, text)
    assert code != 0
    assert f"{p}{want}" in out, out


def test_missing_or_broken_tls_files(tmp_path):
    """check loads [tls] like serve does: a missing, unreadable or broken
    certificate or key is an error naming the configuration line that set
    it and the file, not a surprise at start-up."""
    tls = tmp_path / "tls"
    subprocess.run([str(BIN), "gen-cert", "--hostname", "mx.test", "--dir", str(tls)], check=True,
                   capture_output=True)
    base = render_config(BASE, [])
    cert_line = base.count("\n") + 2  # [tls] is the next line, cert the one after
    good = f'[tls]\ncert = "{tls}/cert.pem"\nkey = "{tls}/key.pem"\n'
    code, out, _ = check(tmp_path, base + good)
    assert code == 0, out
    (tmp_path / "junk.pem").write_text("not a key\n")
    cases = [
        (good.replace("cert.pem", "nope.pem"), cert_line, f"tls.cert {tls}/nope.pem"),
        (good.replace(f"{tls}/cert.pem", str(tls)), cert_line, f"tls.cert {tls}: is a directory"),
        (good.replace(f"{tls}/cert.pem", f"{tmp_path}/junk.pem"), cert_line,
         f"tls.cert {tmp_path}/junk.pem: no PEM certificate"),
        (good.replace(f"{tls}/key.pem", f"{tmp_path}/junk.pem"), cert_line + 1, f"tls.key {tmp_path}/junk.pem"),
        (good.replace(f"{tls}/key.pem", f"{tls}/cert.pem"), cert_line + 1, f"tls.key {tls}/cert.pem"),
    ]
    for tail, line, want in cases:
        code, out, p = check(tmp_path, base + tail)
        assert code != 0 and f"{p}:{line}: {want}" in out, (want, out)


def test_duplicate_listen_address_names_the_line(tmp_path):
    text = ('[server]\nhostname = "h"\nlocal_domains = []\nlisten = ["127.0.0.1:2600"]\n'
            '[[listener]]\nname = "sub"\naddress = "127.0.0.1:2600"\n')
    code, out, p = check(tmp_path, text)
    assert code != 0 and f"{p}:7: listen address 127.0.0.1:2600 is used twice" in out, out


def test_gen_cert_concurrent_runs_leave_a_matching_pair(tmp_path):
    """Parallel `gen-cert` runs (two test workers, two terminals) agree on one
    certificate and key: the server starts with them."""
    d = tmp_path / "tls"
    procs = [subprocess.Popen([str(BIN), "gen-cert", "--hostname", "mx.test", "--dir", str(d)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(6)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert sorted(f.name for f in d.iterdir() if not f.name.startswith(".")) == ["cert.pem", "key.pem"]
    code, out, _ = check(tmp_path, render_config(BASE, []) + f'[tls]\ncert = "{d}/cert.pem"\nkey = "{d}/key.pem"\n')
    assert code == 0, out


def plugin_cfg(path, config=None, name="bad"):
    return render_config(BASE, [{"name": name, "path": str(path), "config": config or {}}])


def test_missing_plugin_file(tmp_path):
    code, out, _ = check(tmp_path, plugin_cfg(tmp_path / "nope.wasm"))
    assert code != 0 and 'plugin "bad": cannot read' in out and "nope.wasm" in out


def test_garbage_plugin_file(tmp_path):
    f = tmp_path / "garbage.wasm"
    f.write_bytes(b"#!/bin/sh\necho hi\n")
    code, out, _ = check(tmp_path, plugin_cfg(f))
    assert code != 0 and 'plugin "bad"' in out and "is not a WebAssembly file" in out


def test_core_module_instead_of_component(tmp_path):
    f = tmp_path / "core.wasm"
    f.write_bytes(b"\0asm\x01\0\0\0")
    code, out, _ = check(tmp_path, plugin_cfg(f))
    assert code != 0 and "core WebAssembly module, not a component" in out


def test_truncated_component(tmp_path):
    f = tmp_path / "trunc.wasm"
    f.write_bytes(wasm("test-probe").read_bytes()[:5000])
    code, out, _ = check(tmp_path, plugin_cfg(f))
    assert code != 0 and 'plugin "bad"' in out and "does not compile" in out


def built_version(data: bytes) -> bytes:
    """The contract version a built component names (b"0.1.0" or b"0.2.0")."""
    for v in (b"0.1.0", b"0.2.0"):
        if b"policy/rcpt-to-hook@" + v in data:
            return v
    raise AssertionError("test-rcpt-only names no known contract version")


def test_unsupported_wit_version(tmp_path):
    data = wasm("test-rcpt-only").read_bytes()
    v = built_version(data)
    f = tmp_path / "v09.wasm"
    f.write_bytes(data.replace(b"policy/rcpt-to-hook@" + v, b"policy/rcpt-to-hook@0.9.0"))
    code, out, _ = check(tmp_path, plugin_cfg(f, {"blocked": []}))
    assert code != 0 and "postern:policy/rcpt-to-hook@0.9.0" in out
    assert "implements postern:policy@0.1.0 and postern:policy@0.2.0" in out


def test_mixed_wit_versions_are_refused(tmp_path):
    """One export of the other served version, the rest unchanged: a
    component is built against one contract, so the mix is refused."""
    data = wasm("test-rcpt-only").read_bytes()
    v = built_version(data)
    other = b"0.2.0" if v == b"0.1.0" else b"0.1.0"
    f = tmp_path / "mixed.wasm"
    f.write_bytes(data.replace(b"policy/rcpt-to-hook@" + v, b"policy/rcpt-to-hook@" + other))
    code, out, _ = check(tmp_path, plugin_cfg(f, {"blocked": []}))
    assert code != 0 and "mixes contract versions" in out, out
    assert "rcpt-to-hook@" + other.decode() in out


def test_init_refuses_config(tmp_path):
    code, out, _ = check(tmp_path, plugin_cfg(wasm("test-rcpt-only"), {"blockd": ["x"]}))
    assert code != 0 and 'plugin "bad" refused its configuration' in out and "unknown field `blockd`" in out


def test_serve_refuses_bad_plugin_too(tmp_path):
    f = tmp_path / "garbage.wasm"
    f.write_bytes(b"nope")
    p = tmp_path / "postern.toml"
    p.write_text(plugin_cfg(f))
    r = subprocess.run([str(BIN), "serve", "--config", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "is not a WebAssembly file" in r.stderr
    # Sockets are bound before plugins load: the failed start removes its admin socket.
    assert (tmp_path / "data").is_dir() and not (tmp_path / "data" / "postern.sock").exists()


def test_version_flag():
    r = subprocess.run([str(BIN), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("postern ")
