"""The Prometheus endpoint: every family a running server reports, read
from a real scrape after real traffic."""

import re
import urllib.request

from harness import ehlo, message, plugin


def scrape(srv) -> str:
    rec = srv.wait_log(lambda r: r.get("message") == "metrics listening")
    with urllib.request.urlopen(f"http://{rec['address']}/metrics", timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def value(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in scrape:\n{text}")


def test_metrics_families(start):
    probe = plugin("probe", "test-probe", {
        "tag": "m",
        "rules": [{"stage": "rcpt-to", "contains": "deny", "kind": "reject", "code": 550, "enhanced": "5.7.1",
                   "text": "no"}],
        "fail": [{"stage": "rcpt-to", "contains": "trap", "kind": "trap"},
                 {"stage": "rcpt-to", "contains": "loop", "kind": "loop"}],
    }, timeout_ms=200)
    srv = start(plugins=[probe], extra='[metrics]\nlisten = "127.0.0.1:0"\n')
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<deny@example.test>")[0] == 550
    assert c.cmd("RCPT TO:<trap@example.test>")[0] == 451
    assert c.cmd("RCPT TO:<loop@example.test>")[0] == 451
    assert c.cmd("RCPT TO:<ok@example.test>")[0] == 250
    c.cmd("DATA")
    c.send(message() + b".\r\n")
    assert c.reply()[0] == 250
    c.cmd("QUIT")
    srv.write_config([probe], extra='[metrics]\nlisten = "127.0.0.1:0"\n')
    assert srv.admin("reload").returncode == 0
    text = scrape(srv)
    assert value(text, "postern_sessions_total") >= 1
    assert value(text, "postern_replies_total", code="550") == 1
    assert value(text, "postern_replies_total", code="451") == 2
    assert value(text, "postern_messages_total", result="queued") == 1
    assert value(text, "postern_plugin_verdicts_total", plugin="probe", stage="rcpt-to", verdict="reject") == 1
    assert value(text, "postern_plugin_errors_total", plugin="probe", stage="rcpt-to", kind="trap") == 1
    assert value(text, "postern_plugin_errors_total", plugin="probe", stage="rcpt-to", kind="timeout") == 1
    assert value(text, "postern_plugin_call_duration_seconds_count", plugin="probe", stage="rcpt-to") >= 4
    assert re.search(r'postern_plugin_call_duration_seconds_bucket\{le="[0-9.e-]+",plugin="probe",stage="data"\}', text)
    # Buckets are cumulative and end at +Inf == _count.
    buckets = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("postern_plugin_call_duration_seconds_bucket")
               and 'plugin="probe"' in line and 'stage="rcpt-to"' in line]
    assert buckets == sorted(buckets) and len(buckets) > 5
    assert buckets[-1] == value(text, "postern_plugin_call_duration_seconds_count", plugin="probe", stage="rcpt-to")
    assert value(text, "postern_plugin_instantiations_total", plugin="probe") >= 2
    assert value(text, "postern_spool_messages") == 1
    assert value(text, "postern_spool_bytes") > 0
    assert value(text, "postern_spool_commits_total") == 1
    assert value(text, "postern_spool_syncs_total") >= 1
    assert value(text, "postern_spool_segments") >= 1
    assert value(text, "postern_generation") == 2
    assert value(text, "postern_reloads_total", result="ok") == 1
    assert value(text, "postern_sessions_active") == 0
    assert text.rstrip().endswith("# EOF")
