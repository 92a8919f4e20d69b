"""The delivery-side hooks of `postern:policy@0.2.0`, through the real server,
the real queue manager and the `test-router` plugin: `route-hook` sends each
recipient domain to its own relay (or refuses or defers it), `delivery-hook`
turns a failed attempt into a retry, a give-up or a failure without a bounce,
and `bounce-hook` sees every bounce Postern generates and can refuse it; a
canary generation answers the delivery questions of its share of messages.
Skipped against 0.1 builds (0.1 has no delivery side)."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import threading
import time

import pytest
from harness import BIN, CONTRACT, plugin
from test_delivery import (delivery, maildir, maildir_count, queue_empty, relay, report_fields,
                           send, sink, wait_until)  # noqa: F401 (sink is a fixture)

pytestmark = pytest.mark.skipif(CONTRACT == "0.1", reason="0.2 delivery-side hooks")


def router(**config):
    return plugin("router", "test-router", config)


def router_log(srv, kind: str) -> list[str]:
    """The router's own log lines of one kind ("route", "delivery-result", "bounce")."""
    return [r["message"] for r in srv.log_records()
            if r.get("plugin") == "router" and str(r.get("message", "")).startswith(kind + " ")]


def test_route_sends_each_domain_to_its_own_relay(start, sink):
    a, b, default, unlisted = sink(), sink(), sink(), sink()
    srv = start(plugins=[relay(), router(routes={
        "a.test": f"relay:127.0.0.1:{a.port}",
        "b.test": f"relay:[127.0.0.1]:{b.port}",
        "c.test": f"relay:127.0.0.1:{unlisted.port}",
        "closed.test": "refuse",
        "later.test": "defer",
    })], extra=delivery(relayhost=f"127.0.0.1:{default.port}",
                        route_relays=[f"[127.0.0.1]:{a.port}", f"127.0.0.1:{b.port}"]))
    send(srv.port, "alice@example.test",
         ["x@a.test", "y@b.test", "z@other.test", "gone@closed.test", "wait@later.test",
          "u@c.test"], "routed")
    wait_until(lambda: a.count == 1 and b.count == 1 and default.count == 1,
               what="one delivery per relay", srv=srv)
    # A relay the operator did not list in delivery.route_relays is not
    # reached: the recipient is deferred, naming the setting.
    rec = srv.wait_log(lambda r: r.get("message") == "deferred" and r.get("to") == "u@c.test")
    assert rec["status"] == "4.3.5" and "not in delivery.route_relays" in rec["reason"], rec
    assert unlisted.count == 0
    assert a.messages[0].rcpts == ["x@a.test"]
    assert b.messages[0].rcpts == ["y@b.test"]
    # A domain the plugin leaves to the host goes to the configured relayhost.
    assert default.messages[0].rcpts == ["z@other.test"]
    # The refused recipient is bounced with the plugin's reply.
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="the bounce", srv=srv)
    f = report_fields(next(iter(maildir(srv, "alice@example.test"))))
    assert f["Final-Recipient"] == "rfc822; gone@closed.test"
    assert (f["Action"], f["Status"]) == ("failed", "5.7.1")
    assert "Recipient domain closed by policy (route-hook of router)" in f["Diagnostic-Code"]
    # The deferred one stays queued, asked again on every attempt.
    wait_until(lambda: len([l for l in router_log(srv, "route") if "wait@later.test" in l]) >= 2,
               what="the deferred recipient routed again", srv=srv)
    assert not queue_empty(srv)
    deferred = srv.wait_log(lambda r: r.get("message") == "deferred" and r.get("to") == "wait@later.test")
    assert deferred["status"] == "4.7.1" and "Not now" in deferred["reason"]
    first = router_log(srv, "route")[0]
    assert "(attempts 0)" in first


def test_an_invalid_route_defers_instead_of_misrouting(start, sink):
    default = sink()
    srv = start(plugins=[relay(), router(routes={
        "a.test": "relay:bad_host!:99",
        "b.test": "relay:not a host",
        "c.test": "mx:bad_domain.test",
    })], extra=delivery(relayhost=f"127.0.0.1:{default.port}"))
    send(srv.port, "alice@example.test", ["x@a.test", "y@b.test", "z@c.test"], "bad-route")
    for to, name in [("x@a.test", 'relay "bad_host!:99"'), ("y@b.test", 'relay "not a host"'),
                     ("z@c.test", 'MX domain "bad_domain.test"')]:
        rec = srv.wait_log(lambda r: r.get("message") == "deferred" and r.get("to") == to)
        assert rec["status"] == "4.3.0" and f"router routed it to an invalid {name}" in rec["reason"], rec
    # Answering nonsense is not a plugin failure: no breaker count, no on_error.
    assert not [r for r in srv.log_records() if r.get("plugin") == "router" and r.get("error_kind")]
    # And nothing went to the default relayhost meanwhile (routes are asked
    # again on the retry, a second later).
    wait_until(lambda: len([l for l in router_log(srv, "route") if "x@a.test" in l]) >= 2,
               what="a second attempt", srv=srv)
    assert default.count == 0


def test_delivery_result_hook_gives_up_retries_and_suppresses_bounces(start, sink):
    tries: dict[str, int] = {}

    def rcpt(address):
        tries[address] = tries.get(address, 0) + 1
        if address.endswith("@quiet.test"):
            return "550 5.1.1 no such user"
        if address.endswith("@slow.test"):
            return "451 4.4.2 try later"
        if address.endswith("@again.test") and tries[address] == 1:
            return "550 5.2.1 mailbox disabled for now"
        return None

    s = sink(rcpt=rcpt)
    srv = start(plugins=[relay(), router(results={
        "quiet.test": "suppress-bounce", "slow.test": "give-up", "again.test": "retry",
    })], extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    send(srv.port, "alice@example.test", ["nobody@quiet.test", "late@slow.test", "back@again.test"],
         "judged")
    # The permanent failure of again.test was turned into a retry: delivered later.
    wait_until(lambda: s.count == 1, what="delivery on retry", srv=srv)
    assert s.messages[0].rcpts == ["back@again.test"]
    wait_until(lambda: queue_empty(srv), what="empty queue", srv=srv)
    # slow.test was given up at once (one try, no retry schedule) and bounced;
    # quiet.test failed without a bounce.
    assert tries["late@slow.test"] == 1 and tries["nobody@quiet.test"] == 1
    (dsn,) = list(maildir(srv, "alice@example.test"))
    f = report_fields(dsn)
    assert f["_groups"] == 2, "only the given-up recipient is reported"
    assert f["Final-Recipient"] == "rfc822; late@slow.test"
    assert (f["Action"], f["Status"]) == ("failed", "5.4.2")
    assert "451 4.4.2 try later" in f["Diagnostic-Code"]
    judged = router_log(srv, "delivery-result")
    assert any("nobody@quiet.test 5.1.1 permanent=true -> Decision::SuppressBounce" in l for l in judged), judged
    assert any("late@slow.test 4.4.2 permanent=false -> Decision::GiveUp" in l for l in judged), judged
    quiet = srv.wait_log(lambda r: r.get("to") == "nobody@quiet.test" and r.get("message", "").startswith("failed"))
    assert quiet["message"] == "failed; no bounce (plugin)"


def test_bounce_hook_sees_every_bounce_and_can_refuse_one(start, sink):
    s = sink(rcpt=lambda a: "550 5.1.1 no such user")
    srv = start(plugins=[relay(), router(refuse_bounces_to=["noisy@example.test"])],
                extra=delivery(relayhost=f"127.0.0.1:{s.port}"))
    send(srv.port, "noisy@example.test", ["nobody@remote.test"], "refused-bounce")
    rec = srv.wait_log(lambda r: r.get("message") == "bounce refused by plugin; not sent")
    assert rec["to"] == "noisy@example.test"
    assert "router: 550 No bounces to this sender" in rec["reason"]
    wait_until(lambda: queue_empty(srv), what="the message leaves the queue", srv=srv)
    assert maildir_count(srv, "noisy@example.test") == 0
    # Another sender's bounce passes the same chain and is sent.
    send(srv.port, "alice@example.test", ["nobody@remote.test"], "sent-bounce")
    wait_until(lambda: maildir_count(srv, "alice@example.test") == 1, what="the bounce", srv=srv)
    seen = router_log(srv, "bounce")
    assert len(seen) == 2, seen
    assert "to <noisy@example.test> for nobody@remote.test" in seen[0] and seen[0].endswith("-> refuse")
    assert "report multipart/report" in seen[1] and seen[1].endswith("-> pass")
    time.sleep(0.3)
    assert maildir_count(srv, "noisy@example.test") == 0


def test_a_canary_generation_answers_delivery_questions_for_its_share(start, sink):
    """`postern reload --canary 50` with a router that routes elsewhere: about
    half of the messages (by queue id) are routed by the canary's router, the
    rest by the current one's."""
    old, new = sink(), sink()
    relays = delivery(route_relays=[f"127.0.0.1:{old.port}", f"127.0.0.1:{new.port}"])
    srv = start(plugins=[relay(), router(routes={"a.test": f"relay:127.0.0.1:{old.port}"})],
                extra=relays)
    srv.write_config([relay(), router(routes={"a.test": f"relay:127.0.0.1:{new.port}"})], extra=relays)
    r = subprocess.run([str(BIN), "reload", "--canary", "50", "--config", str(srv.config_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "canary: 50%" in r.stdout, r.stdout + r.stderr
    n = 40
    for i in range(n):
        send(srv.port, "alice@example.test", [f"r{i}@a.test", f"s{i}@a.test"], f"canary-{i}")
    wait_until(lambda: old.count + new.count == n, what="every message relayed", srv=srv)
    # 50% of 40 messages: both sides get some (all on one side has odds 2^-39).
    assert 6 <= new.count <= n - 6, (old.count, new.count)


def test_jobs_drained_from_an_unreachable_destination_are_judged_too(start):
    """A destination that fails (here: greets nobody, then hangs up) defers the
    jobs queued behind the one that tried it without connecting again; the
    delivery-hook judges those as well: given up at once, one connection in
    all, three bounces."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(16)
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = dead.accept()
            except OSError:
                return
            accepted.append(conn)
            time.sleep(1.0)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    port = dead.getsockname()[1]
    try:
        srv = start(plugins=[relay(), router(routes={"dead.test": f"relay:127.0.0.1:{port}"},
                                             results={"dead.test": "give-up"})],
                    extra=delivery(route_relays=[f"127.0.0.1:{port}"], max_per_destination=1,
                                   connect_timeout="5s", command_timeout="5s"))
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
            for i in range(3):
                s.sendmail("alice@example.test", [f"r{i}@dead.test"],
                           f"Subject: drained-{i}\r\n\r\nbody\r\n".encode())
        wait_until(lambda: maildir_count(srv, "alice@example.test") == 3, what="three bounces", srv=srv)
        judged = router_log(srv, "delivery-result")
        for i in range(3):
            assert any(f"r{i}@dead.test" in l and "Decision::GiveUp" in l for l in judged), judged
        assert len(accepted) == 1, f"{len(accepted)} connections: the drained jobs tried again"
        for dsn in maildir(srv, "alice@example.test"):
            f = report_fields(dsn)
            assert f["Action"] == "failed" and f["Status"].startswith("5."), f
    finally:
        dead.close()
