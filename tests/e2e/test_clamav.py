"""The `av-scan` host capability and the shipped `clamav` plugin, against
Debian's clamd started by the tests with their own signatures (EICAR and a
marker; nothing is downloaded): infected messages are refused with the
signature's name, clean ones accepted and tagged; a scanner that cannot be
reached follows `on_scan_error`; a plugin without the grant is told so."""

from pluginkit import component
from test_metrics import scrape, value
from test_milter import EICAR, MARKER, clamd, send_one, with_attachment  # noqa: F401 (clamd: a fixture)


def av(sock) -> str:
    return f'[av]\nclamd = "unix:{sock}"\ntimeout = "20s"\n'


def test_infected_mail_is_refused_with_the_signature_name(start, clamd):  # noqa: F811
    srv = start(plugins=[component("clamav", capabilities=["av-scan"], timeout_ms=20000)],
                extra=av(clamd) + '[metrics]\nlisten = "127.0.0.1:0"\n')
    for bad, name in ((EICAR, "Postern.Test.EICAR"), (f"x {MARKER} y", "Postern.Test.Marker")):
        code, text = send_one(srv.port, with_attachment(bad))
        assert code == 554 and text.startswith(f"5.7.0 Virus found: {name}"), (code, text)
    assert srv.queued() == []
    code, text = send_one(srv.port, with_attachment("harmless"))
    assert code == 250, text
    (qid,) = srv.queued()
    _, data = srv.read_queued(qid)
    assert b"\r\nX-Virus-Scanned: ClamAV (Postern)\r\n" in data
    status = srv.admin("status").stdout
    assert "virus scanner" in status and "1 clean, 2 infected, 0 failed" in status, status
    text = scrape(srv)
    assert value(text, "postern_av_scans_total", result="infected") == 2
    assert value(text, "postern_av_scans_total", result="clean") == 1


def test_scanner_trouble_follows_on_scan_error_and_the_grant_is_needed(start, tmp_path):
    missing = tmp_path / "no-clamd.sock"
    srv = start(plugins=[component("clamav", capabilities=["av-scan"])], extra=av(missing))
    code, text = send_one(srv.port, with_attachment(EICAR))
    assert (code, text) == (451, "4.7.0 Virus scan unavailable, try again later")
    assert srv.queued() == []
    srv = start(plugins=[component("clamav", {"on_scan_error": "accept"}, capabilities=["av-scan"])],
                extra=av(missing))
    assert send_one(srv.port, with_attachment("harmless"))[0] == 250
    # Without the grant: a temporary failure, and the log says what is missing.
    srv = start(plugins=[component("clamav")], extra=av(missing))
    assert send_one(srv.port, with_attachment("harmless"))[0] == 451
    srv.wait_log(lambda r: "needs the \"av-scan\" capability" in r.get("message", ""))
