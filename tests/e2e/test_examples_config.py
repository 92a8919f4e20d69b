"""The shipped configurations pass `postern check` without a network:
examples/postern.toml as is, and examples/production.toml copied to a
temporary directory with its certificate, data and component paths pointed
at generated certificates and the built components. Also: both name the
components where `make build` puts them, and the production file keeps the
set-up it documents (submission ports, DNS checks, relay, metrics)."""

import json
import re
import subprocess
import tomllib

import pytest
from harness import BIN, CACHE_DIR, ROOT, SCRIPT_WASM_DIR, WASM_DIR

EXAMPLES = ROOT / "examples"
PRODUCTION = EXAMPLES / "production.toml"


def offline_prefix() -> list[str]:
    """`unshare -rn` (no network but loopback) when this machine allows it."""
    try:
        ok = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return ["unshare", "-rn"] if ok else []


def check(config, cwd=ROOT):
    r = subprocess.run(offline_prefix() + [str(BIN), "check", "--config", str(config)], cwd=cwd,
                       capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout + r.stderr


def plugins(path):
    return tomllib.loads(path.read_text())["plugin"]


@pytest.mark.parametrize("name", ["postern.toml", "production.toml"])
def test_components_are_where_make_build_puts_them(name):
    built = {WASM_DIR.resolve(), SCRIPT_WASM_DIR.resolve()}
    for p in plugins(EXAMPLES / name):
        path = (EXAMPLES / p["path"]).resolve()
        assert path.parent in built and path.exists(), (p["name"], p["path"])


def test_example_passes_check_offline():
    subprocess.run([str(BIN), "gen-cert", "--hostname", "mx.example.test", "--dir", "examples/data/tls"],
                   cwd=ROOT, check=True, capture_output=True)
    code, out = check("examples/postern.toml")
    assert code == 0, out


def test_production_passes_check_offline(tmp_path):
    subprocess.run([str(BIN), "gen-cert", "--hostname", "mx.example.org", "--dir", str(tmp_path / "tls")],
                   check=True, capture_output=True)
    (tmp_path / "dkim").mkdir()
    text = PRODUCTION.read_text()
    for old, new in [
        ('"/etc/postern/tls/fullchain.pem"', json.dumps(str(tmp_path / "tls" / "cert.pem"))),
        ('"/etc/postern/tls/privkey.pem"', json.dumps(str(tmp_path / "tls" / "key.pem"))),
        ('"/var/lib/postern"', json.dumps(str(tmp_path / "data"))),
        # The postern account exists where the package is installed
        # (tests/e2e/test_package.py checks the file there as is).
        ('user = "postern"', "allow_root = true"),
        ('"/etc/postern/dkim', json.dumps(str(tmp_path / "dkim"))[:-1]),  # the mail-auth files grant
        ('"../target/wasm32-wasip2/release/', json.dumps(str(WASM_DIR))[:-1] + "/"),
        ('"../target/plugins/', json.dumps(str(SCRIPT_WASM_DIR))[:-1] + "/"),
    ]:
        assert old in text, f"{old} is no longer in {PRODUCTION.name}: update this test"
        text = text.replace(old, new)
    assert "[runtime]" not in text
    text += f"\n[runtime]\ncache_dir = {json.dumps(str(CACHE_DIR))}\n"  # share compiled components
    config = tmp_path / "production.toml"
    config.write_text(text)
    code, out = check(config)
    assert code == 0, out
    listed = re.findall(r"^  plugin (\S+) ", out, re.M)
    assert listed == [p["name"] for p in plugins(PRODUCTION)], out


def test_production_sets_up_what_it_documents():
    cfg = tomllib.loads(PRODUCTION.read_text())
    listeners = {entry["address"]: entry for entry in cfg["listener"]}
    assert listeners["0.0.0.0:587"]["require_auth"] and listeners["0.0.0.0:587"]["tls"] == "starttls"
    assert listeners["0.0.0.0:465"]["require_auth"] and listeners["0.0.0.0:465"]["tls"] == "implicit"
    assert cfg["metrics"]["listen"].startswith("127.0.0.1:")
    assert cfg["server"]["user"] == "postern" and "allow_root" not in cfg["server"]
    assert cfg["server"]["data_dir"] == "/var/lib/postern"
    assert cfg["dns"]["nameservers"]
    chain = {p["name"]: p for p in cfg["plugin"]}
    assert {"dnsbl", "greylist", "header-filter", "auth-file", "envelope-check"} <= chain.keys()
    env = chain["envelope-check"]
    assert env["config"]["check_sender_domain"] and "dns" in env["capabilities"]
    assert chain["dnsbl"]["config"]["zones"][0]["zone"] == "zen.spamhaus.org"
    relay = chain["relay-control"]
    assert relay["config"]["relay_networks"] and relay["config"]["recent_auth_window"] > 0
    assert relay["kv_namespace"] == cfg["auth"]["remember_namespace"] and "kv" in relay["capabilities"]
    assert cfg["auth"]["remember_window"] != "0s"
    # No account ships.
    assert chain["auth-file"]["config"]["users"] == {}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")) + sorted((ROOT / "bench").glob("*.toml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configurations_never_serve_the_internet_as_root(path):
    """Each either switches to an account, or allows root explicitly and then
    listens (and serves metrics) on loopback only."""
    server = tomllib.loads(path.read_text())
    cfg = server["server"]
    if "user" in cfg:
        assert not cfg.get("allow_root", False), path
        return
    assert cfg.get("allow_root") is True, f"{path.name}: as root it would refuse to start"
    addresses = cfg.get("listen", []) + [entry["address"] for entry in server.get("listener", [])]
    if "listen" in server.get("metrics", {}):
        addresses.append(server["metrics"]["listen"])
    for address in addresses:
        host = address.rsplit(":", 1)[0].strip("[]")
        assert host in ("127.0.0.1", "::1") or host.startswith("127."), f"{path.name}: {address} as root"
