"""STARTTLS, implicit TLS and SMTP AUTH with real clients (swaks, smtplib,
raw sockets): AUTH only after TLS, submission requires AUTH, the auth stage
decides, failures are limited, the STARTTLS injection (CVE-2011-0411) is
impossible, broken handshakes disturb nobody, TLS facts reach plugins, and
certificates are re-read on reload."""

import base64
import hashlib
import json
import smtplib
import socket
import ssl
import subprocess
import time

import pytest
from harness import BIN, Raw, message, plugin


def certs(tmp_path, name="tls"):
    d = tmp_path / name
    subprocess.run([str(BIN), "gen-cert", "--hostname", "mx.example.test", "--dir", str(d)],
                   check=True, capture_output=True)
    return d


def tls_extra(d, listeners=""):
    return f'[tls]\ncert = "{d}/cert.pem"\nkey = "{d}/key.pem"\n' + listeners


def listener(name, tls=None, require_auth=False, allow_plaintext_auth=False):
    s = f'[[listener]]\nname = "{name}"\naddress = "127.0.0.1:0"\n'
    if tls:
        s += f'tls = "{tls}"\n'
    if require_auth:
        s += "require_auth = true\n"
    if allow_plaintext_auth:
        s += "allow_plaintext_auth = true\n"
    return s


def port_of(srv, name):
    rec = srv.wait_log(lambda r: r.get("message") == "listening" and r.get("listener") == name)
    return int(rec["address"].rsplit(":", 1)[1])


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


PASSWORD = "Zebra-Quartz-7741"

# The probe accepts credentials whose user name contains "good" and logs
# every stage with the session (TLS facts included).
AUTH_PROBE = plugin("auth", "test-probe", {
    "tag": "auth",
    "rules": [{"stage": "auth", "contains": "good", "kind": "accept"}],
})


def test_starttls_then_auth_with_smtplib(start, tmp_path):
    srv = start(plugins=[AUTH_PROBE], extra=tls_extra(certs(tmp_path)))
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        code, text = s.ehlo("client.test")
        assert code == 250 and b"STARTTLS" in text and b"AUTH" not in text
        # AUTH before TLS is refused (538 5.7.11).
        code, text = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0good\0pw").decode())
        assert code == 538
        s.starttls(context=ctx())
        code, text = s.ehlo("client.test")
        assert b"AUTH PLAIN LOGIN" in text and b"STARTTLS" not in text
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("bad-user", PASSWORD)
        assert e.value.smtp_code == 535
        s.login("good-user", PASSWORD)
        assert s.sendmail("a@client.test", ["b@example.test"], message()) == {}
    env, msg = srv.read_queued(srv.queued()[0])
    assert env["auth_user"] == "good-user" and env["tls"] is True
    assert b"with ESMTPSA id" in msg
    calls = srv.probe_calls("auth", "auth")
    # smtplib tries PLAIN, then LOGIN, for the bad user before giving up.
    assert [(c["arg"]["mechanism"], c["arg"]["username"]) for c in calls] == [
        ("PLAIN", "bad-user"), ("LOGIN", "bad-user"), ("PLAIN", "good-user")]
    assert calls[-1]["session"]["tls"]["protocol"] in ("TLSv1.3", "TLSv1.2")
    assert calls[-1]["session"]["tls"]["cipher"]
    # Credentials never reach the log: not the password, nor any base64 form
    # of it (alone, as a PLAIN response, at each of the three alignments).
    log = "\n".join(srv.raw_log)
    assert PASSWORD not in log
    for user in ("good-user", "bad-user"):
        for blob in (PASSWORD.encode(), b"\0" + user.encode() + b"\0" + PASSWORD.encode()):
            for skip in range(3):
                b64 = base64.b64encode(blob[skip:]).decode()[4:-4]
                assert b64 not in log, blob


def test_swaks_starttls_and_implicit_tls_with_auth(start, tmp_path):
    extra = tls_extra(certs(tmp_path), listener("smtps", tls="implicit"))
    srv = start(plugins=[AUTH_PROBE], extra=extra)
    smtps = port_of(srv, "smtps")
    base = ["swaks", "--to", "b@example.test", "--from", "a@client.test", "--auth", "PLAIN",
            "--auth-user", "good", "--auth-password", "secret"]
    out = subprocess.run(base + ["--server", f"127.0.0.1:{srv.port}", "--tls"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "235 2.7.0 Authentication successful" in out.stdout
    assert "250 2.0.0 Ok: queued as" in out.stdout
    out = subprocess.run(base + ["--server", f"127.0.0.1:{smtps}", "--tlsc"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "235 2.7.0" in out.stdout and "250 2.0.0 Ok: queued as" in out.stdout
    out = subprocess.run(
        ["swaks", "--to", "b@example.test", "--server", f"127.0.0.1:{srv.port}", "--tls", "--auth", "LOGIN",
         "--auth-user", "mallory", "--auth-password", "nope"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "535 5.7.8" in out.stdout
    assert len(srv.queued()) == 2


def test_submission_requires_auth_and_plaintext_auth_is_opt_in(start, tmp_path):
    extra = tls_extra(certs(tmp_path), listener("submission", require_auth=True)
                      + listener("legacy", tls="none", allow_plaintext_auth=True))
    srv = start(plugins=[AUTH_PROBE], extra=extra)
    sub = port_of(srv, "submission")
    with smtplib.SMTP("127.0.0.1", sub, timeout=10) as s:
        s.starttls(context=ctx())
        s.ehlo("client.test")
        code, text = s.mail("a@client.test")
        assert (code, text) == (530, b"5.7.0 Authentication required")
        s.login("good", "pw")
        assert s.sendmail("a@client.test", ["someone@example.test"], message()) == {}
    legacy = port_of(srv, "legacy")
    with smtplib.SMTP("127.0.0.1", legacy, timeout=10) as s:
        code, text = s.ehlo("client.test")
        assert b"AUTH PLAIN LOGIN" in text and b"STARTTLS" not in text
        s.login("good", "pw")


def test_auth_failures_are_limited(start, tmp_path):
    extra = tls_extra(certs(tmp_path), listener("legacy", tls="none", allow_plaintext_auth=True)
                      + '[auth]\nmax_failures = 2\nclient_failure_limit = 3\nclient_failure_window = "1m"\n')
    srv = start(plugins=[AUTH_PROBE], extra=extra)
    port = port_of(srv, "legacy")
    bad = "PLAIN " + base64.b64encode(b"\0mallory\0x").decode()
    c = Raw(port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("AUTH " + bad)[0] == 535
    code, text = c.cmd("AUTH " + bad)
    assert code == 421 and "Too many failed authentication" in text
    assert c.closed()
    c = Raw(port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("AUTH " + bad)[0] == 535
    # The client is now over its limit across sessions: refused before trying.
    code, text = c.cmd("AUTH PLAIN " + base64.b64encode(b"\0good\0pw").decode())
    assert code == 421 and "Too many failed authentications from your address" in text
    # SASL details: cancel, bad base64, unknown mechanism, LOGIN dialogue.
    c = Raw(srv.port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("AUTH PLAIN")[0] == 538  # no TLS on the main listener


def test_sasl_dialogue_details(start, tmp_path):
    srv = start(plugins=[AUTH_PROBE], extra=tls_extra(certs(tmp_path), listener("legacy", tls="none", allow_plaintext_auth=True)))
    port = port_of(srv, "legacy")
    c = Raw(port)
    c.reply()
    assert c.cmd("AUTH PLAIN")[0] == 503  # before EHLO
    c.cmd("EHLO client.test")
    assert c.cmd("AUTH CRAM-MD5")[0] == 504
    assert c.cmd("AUTH PLAIN") == (334, "")
    assert c.cmd("*")[0] == 501
    assert c.cmd("AUTH PLAIN") == (334, "")
    assert c.cmd("%%%not-base64%%%")[0] == 501
    assert c.cmd("AUTH LOGIN") == (334, base64.b64encode(b"Username:").decode())
    assert c.cmd(base64.b64encode(b"good").decode()) == (334, base64.b64encode(b"Password:").decode())
    assert c.cmd(base64.b64encode(b"pw").decode())[0] == 235
    assert c.cmd("AUTH PLAIN")[0] == 503  # already authenticated
    assert c.cmd("MAIL FROM:<a@client.test>")[0] == 250


def test_auth_lines_may_be_long_other_commands_not(start, tmp_path):
    """RFC 4954 §4: AUTH commands and SASL responses up to 12288 octets; every
    other command keeps RFC 5321's 512."""
    srv = start(plugins=[AUTH_PROBE], extra=tls_extra(certs(tmp_path), listener("legacy", tls="none", allow_plaintext_auth=True)))
    c = Raw(port_of(srv, "legacy"))
    c.reply()
    c.cmd("EHLO client.test")
    long_pw = b"p" * 6000
    initial = "AUTH PLAIN " + base64.b64encode(b"\0good\0" + long_pw).decode()
    assert 8000 < len(initial) < 12286
    assert c.cmd(initial)[0] == 235
    c.cmd("RSET")
    assert c.cmd("NOOP " + "x" * 600)[0] == 500
    c2 = Raw(port_of(srv, "legacy"))
    c2.reply()
    c2.cmd("EHLO client.test")
    assert c2.cmd("AUTH LOGIN")[0] == 334
    assert c2.cmd(base64.b64encode(b"bad").decode())[0] == 334
    assert c2.cmd(base64.b64encode(long_pw).decode())[0] == 535
    assert c2.cmd("AUTH PLAIN " + "A" * 12300)[0] == 500  # beyond 12288
    assert c2.cmd("NOOP") == (250, "2.0.0 Ok")


def test_relay_after_auth_and_recently_authenticated(start, tmp_path):
    relay = plugin("relay-control", "relay-control", {"recent_auth_window": 60}, capabilities=["kv"],
                   kv_namespace="auth")
    extra = tls_extra(certs(tmp_path), listener("legacy", tls="none", allow_plaintext_auth=True)
                      + '[auth]\nremember_window = "1m"\n')
    srv = start(plugins=[AUTH_PROBE, relay], extra=extra)
    port = port_of(srv, "legacy")
    # Without AUTH: relay refused.
    c = Raw(srv.port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<x@remote.example>")[0] == 554
    c.close()
    # With AUTH: relay allowed.
    c = Raw(port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("AUTH PLAIN " + base64.b64encode(b"\0good\0pw").decode())[0] == 235
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<x@remote.example>")[0] == 250
    c.close()
    # A new, unauthenticated session from the same address within the
    # window is recognised as recently authenticated.
    c = Raw(srv.port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@client.test>")
    assert c.cmd("RCPT TO:<x@remote.example>")[0] == 250


def test_starttls_injection_gets_no_reply(start, tmp_path):
    """CVE-2011-0411: commands pipelined with STARTTLS must not be answered."""
    srv = start(extra=tls_extra(certs(tmp_path)))
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"220 ")
    s.sendall(b"EHLO client.test\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    s.sendall(b"STARTTLS\r\nRSET\r\n")
    assert f.readline().startswith(b"220 2.0.0")
    tls = ctx().wrap_socket(s, server_hostname="mx.example.test")
    tls.settimeout(2)
    with pytest.raises(socket.timeout):
        data = tls.recv(4096)
        raise AssertionError(f"server answered the injected command: {data!r}")
    # The session is fresh: EHLO is required again, and it works.
    tls.settimeout(10)
    tls.sendall(b"MAIL FROM:<a@client.test>\r\n")
    assert tls.recv(4096).startswith(b"503")
    tls.sendall(b"EHLO client.test\r\n")
    assert b"250 " in tls.recv(4096)
    srv.wait_log(lambda r: "discarded input pipelined after STARTTLS" in str(r.get("message")))


def test_broken_handshakes_do_not_disturb_others(start, tmp_path):
    extra = tls_extra(certs(tmp_path), listener("smtps", tls="implicit"))
    srv = start(extra=extra)
    smtps = port_of(srv, "smtps")
    healthy = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
    healthy.ehlo("ok.test")
    # Plaintext SMTP on the implicit-TLS port: handshake fails, connection closed.
    s = socket.create_connection(("127.0.0.1", smtps), timeout=5)
    s.sendall(b"EHLO plain.test\r\n")
    data = s.recv(100)
    # Never an SMTP reply: either a TLS alert record (0x15) or a close.
    assert data == b"" or data[0] == 0x15, data
    s.close()
    # A client that vanishes mid-handshake, on both kinds of listener.
    for port in (smtps,):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # truncated ClientHello
        s.close()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"EHLO x.test\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    s.sendall(b"STARTTLS\r\n")
    f.readline()
    s.sendall(b"garbage that is not TLS\r\n")
    s.close()
    # Everyone else is unaffected.
    assert healthy.noop()[0] == 250
    assert healthy.sendmail("a@client.test", ["b@example.test"], message()) == {}
    healthy.quit()
    with smtplib.SMTP_SSL("127.0.0.1", smtps, context=ctx(), timeout=10) as t:
        assert t.ehlo("fine.test")[0] == 250
    srv.wait_log(lambda r: "TLS handshake failed" in str(r.get("message")))


def test_certificates_reload(start, tmp_path):
    d = certs(tmp_path, "a")
    srv = start(extra=tls_extra(d))

    def fingerprint():
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            s.starttls(context=ctx())
            return hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest()

    first = fingerprint()
    other = certs(tmp_path, "b")
    for f in ("cert.pem", "key.pem"):
        (d / f).write_bytes((other / f).read_bytes())
    r = srv.admin("reload")
    assert r.returncode == 0, r.stderr
    assert fingerprint() != first
    # A broken certificate refuses the reload and keeps the working one.
    (d / "cert.pem").write_text("not a certificate")
    r = srv.admin("reload")
    assert r.returncode != 0 and "tls.cert" in r.stderr
    assert fingerprint() != first


def test_client_certificate_presence_reaches_plugins(start, tmp_path):
    from sinks import make_certs

    ca, client_cert, client_key = make_certs(tmp_path / "clients", "client.test", client=True)
    d = certs(tmp_path)
    extra = f'[tls]\ncert = "{d}/cert.pem"\nkey = "{d}/key.pem"\nclient_ca = "{ca}"\n'
    srv = start(plugins=[plugin("p", "test-probe", {"tag": "c"})], extra=extra)
    for present in (True, False):
        c = ctx()
        if present:
            c.load_cert_chain(client_cert, client_key)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            s.starttls(context=c)
            s.ehlo("client.test")
            s.mail("a@client.test")
    calls = srv.probe_calls("c", "mail-from")
    assert [c["session"]["tls"]["client_certificate"] for c in calls] == [True, False]
    assert all(c["session"]["tls"]["protocol"].startswith("TLSv1.") for c in calls)


def test_help_lists_only_what_the_session_may_use(start, tmp_path):
    """HELP names STARTTLS before TLS (when offered) and never after it."""
    srv = start(plugins=[AUTH_PROBE], extra=tls_extra(certs(tmp_path)))
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        s.ehlo("client.test")
        code, text = s.docmd("HELP")
        assert code == 214 and b"STARTTLS" in text.split() and b"AUTH" not in text.split(), text
        s.starttls(context=ctx())
        s.ehlo("client.test")
        code, text = s.docmd("HELP")
        assert code == 214 and b"STARTTLS" not in text.split() and b"AUTH" in text.split(), text
    plain = start()
    with smtplib.SMTP("127.0.0.1", plain.port, timeout=10) as s:
        s.ehlo("client.test")
        code, text = s.docmd("HELP")
        assert code == 214 and b"STARTTLS" not in text.split() and b"EHLO" in text.split(), text


def test_tls12_renegotiation_is_refused_with_an_alert(start, tmp_path):
    """A TLS 1.2 renegotiation request (a new ClientHello) is answered at
    once with a no_renegotiation alert (RFC 5246 §7.2.2), not left hanging
    until the command time-out (OpenSSL's client then gives up)."""
    srv = start(command_timeout="30s", extra=tls_extra(certs(tmp_path)))
    p = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-starttls", "smtp",
         "-tls1_2", "-crlf", "-msg"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(1.0)
        p.stdin.write(b"NOOP\n")
        p.stdin.flush()
        time.sleep(0.5)
        t0 = time.monotonic()
        p.stdin.write(b"R\n")  # s_client: renegotiate
        p.stdin.flush()
        p.wait(timeout=10)
        took = time.monotonic() - t0
        out = p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = out.decode(errors="replace")
    assert "250 2.0.0 Ok" in text, text[-2000:]
    assert "RENEGOTIATING" in text, text[-2000:]
    after = text.split("RENEGOTIATING", 1)[1]
    assert "<<< TLS 1.2, Alert" in after and "no_renegotiation" in after, after[-2000:]
    assert took < 5, f"the answer took {took:.1f}s"
