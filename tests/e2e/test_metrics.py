"""The Prometheus endpoint: every family a running server reports, read
from a real scrape after real traffic."""

import re
import smtplib
import time
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
    # CPU per call, next to wall time: one observation per call, and the
    # looping call burnt CPU until its 200 ms deadline (the others take
    # microseconds); on a busy machine it gets only part of a core in that
    # time, which the CPU sum shows and the wall time does not.
    rcpt = {"plugin": "probe", "stage": "rcpt-to"}
    assert value(text, "postern_plugin_call_cpu_seconds_count", **rcpt) == \
        value(text, "postern_plugin_call_duration_seconds_count", **rcpt)
    cpu, wall = (value(text, f"postern_plugin_call_{f}_seconds_sum", **rcpt) for f in ("cpu", "duration"))
    assert 0.02 < cpu <= wall + 0.005 and wall > 0.2, (cpu, wall)
    assert value(text, "postern_plugin_call_cpu_seconds_sum", plugin="probe", stage="data") < 0.01
    # The session began on the instance loading had created (probe exports
    # `recycle`); the reloaded generation keeps its own checked instance.
    assert value(text, "postern_plugin_instance_reuses_total", plugin="probe") >= 1
    assert value(text, "postern_plugin_recycle_refusals_total", plugin="probe") == 0
    assert value(text, "postern_plugin_idle_instances", plugin="probe") == 1
    assert value(text, "postern_spool_messages") == 1
    assert value(text, "postern_spool_bytes") > 0
    assert value(text, "postern_spool_commits_total") == 1
    assert value(text, "postern_spool_syncs_total") >= 1
    assert value(text, "postern_spool_segments") >= 1
    assert value(text, "postern_generation") == 2
    assert value(text, "postern_reloads_total", result="ok") == 1
    assert value(text, "postern_sessions_active") == 0
    assert text.rstrip().endswith("# EOF")


def test_instance_reuse_and_reuse_false(start):
    """SDK plugins export `recycle`: sequential sessions share one instance,
    unless the operator sets `reuse = false`."""
    shared = plugin("shared", "test-probe", {"tag": "s"})
    fresh = plugin("fresh", "test-probe", {"tag": "f"}, reuse=False)
    srv = start(plugins=[shared, fresh], extra='[metrics]\nlisten = "127.0.0.1:0"\n')

    def idle_scrape():
        # A session gives its instances back as it ends, before it stops
        # counting as active.
        deadline = time.time() + 10
        while value(text := scrape(srv), "postern_sessions_active") != 0 and time.time() < deadline:
            time.sleep(0.05)
        return text

    for _ in range(4):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            assert s.sendmail("a@client.test", ["ok@example.test"], message()) == {}
        text = idle_scrape()
    assert value(text, "postern_plugin_instance_reuses_total", plugin="shared") == 4
    assert value(text, "postern_plugin_instantiations_total", plugin="shared") == 1
    assert value(text, "postern_plugin_idle_instances", plugin="shared") == 1
    assert value(text, "postern_plugin_instance_reuses_total", plugin="fresh") == 0
    assert value(text, "postern_plugin_instantiations_total", plugin="fresh") == 5
    assert value(text, "postern_plugin_idle_instances", plugin="fresh") == 0
    # Every session's records carry its own id, also on a reused instance.
    ids = {r["session"]["id"] for r in srv.probe_calls(tag="s", stage="connect")}
    assert len(ids) == 4


def test_idle_instances_expire_while_the_server_is_quiet(start):
    """Pooled instances unused for `[runtime] idle_timeout` are dropped by the
    server's sweep even when no later session touches the pool."""
    shared = plugin("shared", "test-probe", {"tag": "s"})
    srv = start(plugins=[shared],
                extra='[metrics]\nlisten = "127.0.0.1:0"\n[runtime]\nidle_timeout = "3s"\n')
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        assert s.sendmail("a@client.test", ["ok@example.test"], message()) == {}
    ended = time.time()
    deadline = ended + 10
    while value(text := scrape(srv), "postern_sessions_active") != 0 and time.time() < deadline:
        time.sleep(0.05)
    if time.time() - ended < 2.5:  # not yet expired: the session's instance waits for reuse
        assert value(text, "postern_plugin_idle_instances", plugin="shared") == 1
    while value(text := scrape(srv), "postern_plugin_idle_instances", plugin="shared") != 0:
        assert time.time() < deadline, text
        time.sleep(0.2)
    assert time.time() - ended >= 2.9  # not before its idle timeout
    # A later session gets a fresh instance and works as before.
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        assert s.sendmail("a@client.test", ["ok@example.test"], message()) == {}
    assert value(scrape(srv), "postern_plugin_instantiations_total", plugin="shared") == 2


def test_delivery_metrics(start):
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on: every attempt is deferred
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    grant = plugin("grant", "test-probe", {"tag": "g", "rules": [
        {"stage": "rcpt-to", "contains": "@remote.test", "kind": "accept"}]})
    extra = ('[metrics]\nlisten = "127.0.0.1:0"\n'
             f'[delivery]\nretry_intervals = ["1s"]\nrelayhost = "127.0.0.1:{dead}"\nconnect_timeout = "1s"\n')
    srv = start(plugins=[grant], extra=extra)
    c = ehlo(srv.port)
    c.cmd("MAIL FROM:<a@example.test>")
    assert c.cmd("RCPT TO:<local@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<far@remote.test>")[0] == 250
    c.cmd("DATA")
    c.send(message() + b".\r\n")
    assert c.reply()[0] == 250
    deadline = time.time() + 15
    while True:
        text = scrape(srv)
        try:
            if (value(text, "postern_delivery_recipients_total", result="delivered") >= 1
                    and value(text, "postern_delivery_retries_total") >= 1):
                break
        except AssertionError:
            pass
        assert time.time() < deadline, text
        time.sleep(0.3)
    assert value(text, "postern_delivery_recipients_total", result="deferred") >= 2
    assert value(text, "postern_delivery_attempts_total") >= 2
    assert value(text, "postern_delivery_bounces_total") == 0
    assert value(text, "postern_queue_messages") == 1  # the remote recipient is still owed
