"""auth-file through the real server: SMTP AUTH PLAIN and LOGIN against
argon2 hashes made by `postern hash-password` — 235 for valid credentials,
the same 535 5.7.8 for a wrong password and an unknown user, 421 after three
failures, authzid policy, on_unknown_user = "pass" chaining, no secret in
the log, and load-time refusal of a bad hash (plugins/auth-file/README.md)."""

import smtplib
import subprocess
import time

import pytest
from harness import BIN, Raw, render_config
from pluginkit import AUTH_LISTENER, auth_file, b64, greet, hash_password, plain, plugin_logs, reply, wait_plugin_log

OK = (235, "2.7.0 Authentication successful")
INVALID = reply(535, "5.7.8", "Authentication credentials invalid")
USERS = {"alice": "correct horse", "bob@example.test": "pässwörd"}


@pytest.fixture
def srv(start):
    # The only listener is the plaintext-AUTH one, so srv.port is its port.
    return start(plugins=[auth_file(USERS)], listen=[], extra=AUTH_LISTENER)


def test_smtplib_login(srv):
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
        s.ehlo("client.test")
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        code, text = s.login("alice", "correct horse")
        assert (code, text) == (235, b"2.7.0 Authentication successful")
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
        s.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("alice", "wrong")
        assert (e.value.smtp_code, e.value.smtp_error) == (535, b"5.7.8 Authentication credentials invalid")


@pytest.mark.parametrize(
    "user,password,authzid,want",
    [
        ("alice", "correct horse", "", OK),
        ("alice", "correct horse", "alice", OK),
        ("bob@example.test", "pässwörd", "", OK),
        ("alice", "Correct horse", "", INVALID),
        ("alice", "", "", INVALID),
        ("Alice", "correct horse", "", INVALID),
        ("mallory", "correct horse", "", INVALID),
        ("alice", "correct horse", "bob@example.test", INVALID),
    ],
    ids=["ok", "ok-same-authzid", "ok-utf8", "wrong-case-password", "empty-password", "user-case", "unknown-user",
         "foreign-authzid"],
)
def test_auth_plain(srv, user, password, authzid, want):
    c = greet(srv.port)
    assert c.cmd(f"AUTH PLAIN {plain(user, password, authzid)}") == want
    if want == OK:
        assert c.cmd("MAIL FROM:<x@client.test>")[0] == 250


def test_auth_plain_with_continuation_and_login(srv):
    c = greet(srv.port)
    assert c.cmd("AUTH PLAIN") == (334, "")
    assert c.cmd(plain("alice", "correct horse")) == OK
    c.close()
    c = greet(srv.port)
    assert c.cmd("AUTH LOGIN") == (334, b64("Username:"))
    assert c.cmd(b64("bob@example.test")) == (334, b64("Password:"))
    assert c.cmd(b64("pässwörd")) == OK
    c.close()
    c = greet(srv.port)
    assert c.cmd(f"AUTH LOGIN {b64('alice')}") == (334, b64("Password:"))
    assert c.cmd(b64("nope")) == INVALID


def test_wrong_password_and_unknown_user_look_alike(srv):
    """Same reply, and an unknown user still costs a hash verification (an
    argon2 verification with m=19456 KiB takes tens of ms; a refusal
    without one would take well under a millisecond)."""
    timings = {"wrong": [], "unknown": []}
    for _ in range(2):
        for kind, user in (("wrong", "alice"), ("unknown", "nobody")):
            c = greet(srv.port)
            # The first call of a session instantiates the plugin; time the second.
            assert c.cmd(f"AUTH PLAIN {plain(user, 'x')}") == INVALID
            t = time.perf_counter()
            assert c.cmd(f"AUTH PLAIN {plain(user, 'y')}") == INVALID
            timings[kind].append(time.perf_counter() - t)
            c.close()
    assert min(timings["unknown"]) > 0.005, timings
    assert min(timings["wrong"]) > 0.005, timings


def test_three_failures_close_the_connection(srv):
    c = greet(srv.port)
    assert c.cmd(f"AUTH PLAIN {plain('alice', 'a')}") == INVALID
    assert c.cmd(f"AUTH PLAIN {plain('nobody', 'b')}") == INVALID
    code, text = c.cmd(f"AUTH PLAIN {plain('alice', 'c')}")
    assert code == 421 and text.startswith("4.7.0 "), (code, text)
    assert c.closed()


def test_logs_name_the_user_never_the_secret(srv):
    c = greet(srv.port)
    assert c.cmd(f"AUTH PLAIN {plain('alice', 'hunter2-wrong')}") == INVALID
    assert c.cmd(f"AUTH PLAIN {plain('alice', 'correct horse')}") == OK
    c.cmd("QUIT")
    wait_plugin_log(srv, "auth-file", "auth ok")
    assert plugin_logs(srv, "auth-file") == [
        ("auth failed", [("user", "alice")]),
        ("auth ok", [("user", "alice")]),
    ]
    log = "\n".join(srv.raw_log)
    for secret in ("hunter2-wrong", "correct horse", hash_password("correct horse"), plain("alice", "correct horse")):
        assert secret not in log


def test_auth_is_not_offered_without_tls_by_default(start):
    srv = start(plugins=[auth_file(USERS)])
    c = Raw(srv.port)
    c.reply()
    code, text = c.cmd("EHLO client.test")
    assert code == 250 and not any(line.startswith("AUTH") for line in text.split("\n"))
    assert c.cmd(f"AUTH PLAIN {plain('alice', 'correct horse')}") == \
        reply(538, "5.7.11", "Encryption required: issue STARTTLS before AUTH")


def test_unknown_users_can_be_left_to_the_next_plugin(start):
    srv = start(
        plugins=[
            auth_file({"alice": "correct horse"}, on_unknown_user="pass"),
            auth_file({"carol": "other secret"}, name="auth-file-2"),
        ],
        listen=[], extra=AUTH_LISTENER,
    )
    for user, pw, want in [
        ("alice", "correct horse", OK),
        ("carol", "other secret", OK),
        ("alice", "other secret", INVALID),  # decided by the first plugin
        ("carol", "wrong", INVALID),
        ("nobody", "x", INVALID),
    ]:
        c = greet(srv.port)
        assert c.cmd(f"AUTH PLAIN {plain(user, pw)}") == want, user
        c.close()


def test_a_bad_hash_is_refused_at_load_naming_the_user(tmp_path):
    good = hash_password("pw")
    cfg = {"users": {"alice": good, "eve": "plain-text-password"}}
    path = tmp_path / "postern.toml"
    path.write_text(render_config(
        {"hostname": "mx.test", "listen": ["127.0.0.1:2525"], "local_domains": ["example.test"]},
        [auth_file({}) | {"config": cfg}],
    ))
    r = subprocess.run([str(BIN), "check", "--config", str(path)], capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert 'plugin "auth-file"' in out and 'users["eve"]: not a PHC password hash string' in out, out
    assert "plain-text-password" not in out and good not in out
