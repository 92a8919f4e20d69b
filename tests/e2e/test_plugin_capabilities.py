"""Host capabilities through the real server, proven with the test probe's
host calls (it rejects MAIL FROM with what each call returned): without
"kv"/"dns" every call answers exactly `denied` and the host logs why; with
the grant the calls work; kv keys are private to a plugin unless plugins
share a `kv_namespace` (README "Configuration", wit/host.wit)."""

from harness import DnsServer
from pluginkit import component, greet

SENDER = "MAIL FROM:<a@client.test>"


def probe(name, calls, report=False, **settings):
    """A probe making `calls` ([op, arg, value?]) at MAIL FROM."""
    cfg = {"tag": name, "report_calls": report,
           "calls": [{"stage": "mail-from", "op": c[0], "arg": c[1], "value": c[2] if len(c) > 2 else ""}
                     for c in calls]}
    return {**component("test-probe", cfg), "name": name, **settings}


def reported(srv):
    """The probe's report: the text of its 550 5.7.0 answer to MAIL FROM."""
    c = greet(srv.port)
    code, text = c.cmd(SENDER)
    assert code == 550 and text.startswith("5.7.0 "), (code, text)
    c.cmd("QUIT")
    return text[len("5.7.0 "):]


def host_warnings(srv, plugin_name):
    return [r["message"] for r in srv.log_records()
            if r.get("target") == "postern::plugin" and r.get("plugin") == plugin_name and r.get("level") == "WARN"]


CALLS = [("kv-set", "k", "v"), ("kv-get", "k"), ("dns-a", "granted.test")]


def test_without_capabilities_every_call_is_denied(start):
    dns = DnsServer({("granted.test", "A"): ["192.0.2.1"]})
    try:
        srv = start(extra=dns.config(), plugins=[probe("p", CALLS, report=True)])
        assert reported(srv) == "kv-set(k)=denied; kv-get(k)=denied; dns-a(granted.test)=denied"
        assert dns.queries == []
        warnings = host_warnings(srv, "p")
        assert warnings.count('kv access denied: capability "kv" not granted') == 2, warnings
        assert warnings.count('dns look-up denied: capability "dns" not granted') == 1, warnings
        # The probe's own record of the same calls.
        results = [(c["op"], c["result"]) for c in srv.probe_calls("p", "host-calls")[0]["arg"]]
        assert results == [("kv-set", "denied"), ("kv-get", "denied"), ("dns-a", "denied")]
    finally:
        dns.stop()


def test_with_the_grants_the_calls_work(start):
    dns = DnsServer({("granted.test", "A"): ["192.0.2.1"]})
    try:
        srv = start(extra=dns.config(), plugins=[probe("p", CALLS, report=True, capabilities=["kv", "dns"])])
        assert reported(srv) == "kv-set(k)=ok; kv-get(k)=some(v); dns-a(granted.test)=ok(192.0.2.1)"
        assert ("granted.test", "A") in dns.queries
        assert not [w for w in host_warnings(srv, "p") if "not granted" in w]
    finally:
        dns.stop()


def test_one_grant_does_not_imply_the_other(start):
    srv = start(plugins=[probe("p", [("kv-get", "k"), ("dns-a", "x.test")], report=True, capabilities=["kv"])])
    assert reported(srv) == "kv-get(k)=none; dns-a(x.test)=denied"


def pair(namespace=None):
    """Plugin "a" stores k=from-a, then plugin "b" reports what it reads at k."""
    ns = {"kv_namespace": namespace} if namespace else {}
    return [probe("a", [("kv-set", "k", "from-a")], capabilities=["kv"], **ns),
            probe("b", [("kv-get", "k")], report=True, capabilities=["kv"], **ns)]


def test_plugins_cannot_see_each_others_keys(start):
    srv = start(plugins=pair())
    assert reported(srv) == "kv-get(k)=none"
    # "a" did store its key (it can read it back in its own namespace).
    assert [c["result"] for c in srv.probe_calls("a", "host-calls")[0]["arg"]] == ["ok"]


def test_a_shared_namespace_shares_keys(start):
    srv = start(plugins=pair("shared"))
    assert reported(srv) == "kv-get(k)=some(from-a)"


def test_a_namespace_named_like_another_plugin_reads_its_keys(start):
    # The default namespace is the plugin's name: "b" with kv_namespace "a"
    # reads what plugin "a" stored under its default namespace.
    a, b = pair()
    srv = start(plugins=[a, {**b, "kv_namespace": "a"}])
    assert reported(srv) == "kv-get(k)=some(from-a)"
