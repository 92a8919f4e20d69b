"""attachment-scan through the real server: EICAR in a body or an encoded
part, blocked extensions in base64 attachments (also RFC 2231 names), zip
archives holding a blocked file, attachments deep in nested multiparts and
attached messages, blocked content types, oversize messages, clean
messages spooled intact, and tag mode's X-Postern-Scan header
(plugins/attachment-scan/README.md)."""

import io
import smtplib
import zipfile
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import pytest
from harness import Server
from pluginkit import component

EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EXE = b"MZ\x90\x00" + bytes(range(256)) * 4


def mail(body="Hello.\n", subject="scan test") -> EmailMessage:
    m = EmailMessage(policy=SMTP_POLICY)
    m["From"] = "sender@client.test"
    m["To"] = "rcpt@example.test"
    m["Subject"] = subject
    m["Date"] = "Wed, 25 Nov 2026 10:00:00 +0000"
    m["Message-ID"] = "<scan@client.test>"
    m.set_content(body)
    return m


def attach(m: EmailMessage, data: bytes, filename: str, ctype="application/octet-stream") -> EmailMessage:
    maintype, subtype = ctype.split("/")
    m.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return m


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def send(srv, msg) -> tuple[int, str]:
    data = msg if isinstance(msg, bytes) else msg.as_bytes()
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("sender@client.test")
        s.rcpt("rcpt@example.test")
        code, text = s.data(data)
        return code, text.decode()


def rejected(reason):
    return 554, f"5.7.0 Message rejected: {reason}"


def nested_with(inner_attachment: tuple[bytes, str]) -> EmailMessage:
    """multipart/mixed { multipart/alternative { text, html },
    message/rfc822 { multipart/mixed { text, the attachment } } }"""
    inner = mail("inner message\n", subject="forwarded")
    attach(inner, *inner_attachment)
    outer = mail("see the forwarded message\n")
    outer.add_alternative("<p>see the forwarded message</p>", subtype="html")
    outer.make_mixed()
    outer.add_attachment(inner)  # message/rfc822
    return outer


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("scan"), plugins=[component("attachment-scan", max_memory="64MiB")])
    s.start()
    yield s
    s.stop()


def eicar_in_base64_part():
    return attach(mail(), EICAR.encode(), "notes.txt", "text/plain")


def rfc2231_name():
    m = mail()
    m.add_attachment(EXE, maintype="application", subtype="octet-stream",
                     filename=("utf-8", "", "résumé.exe"))
    return m


def blocked_type():
    return attach(mail(), EXE, "setup.dat", "application/x-msdownload")


CASES = [
    ("eicar-in-body", lambda: mail(f"look: {EICAR}\n"), "virus EICAR-Test-File found"),
    ("eicar-in-base64-part", eicar_in_base64_part, "virus EICAR-Test-File found"),
    ("exe-attachment", lambda: attach(mail(), EXE, "invoice.exe"),
     'attachment "invoice.exe" has a blocked extension (.exe)'),
    ("double-extension", lambda: attach(mail(), EXE, "INVOICE.PDF.EXE"),
     'attachment "INVOICE.PDF.EXE" has a blocked extension (.exe)'),
    ("rfc2231-name", rfc2231_name, 'attachment "r?sum?.exe" has a blocked extension (.exe)'),
    ("zip-with-exe", lambda: attach(mail(), zip_of({"docs/readme.txt": b"hi", "docs/invoice.pdf.exe": EXE}),
                                    "files.zip", "application/zip"),
     'archive "files.zip" contains "docs/invoice.pdf.exe" with a blocked extension (.exe)'),
    ("zip-by-signature", lambda: attach(mail(), zip_of({"run.js": b"alert(1)"}), "data.bin"),
     'archive "data.bin" contains "run.js" with a blocked extension (.js)'),
    ("nested-multipart", lambda: nested_with((EXE, "screensaver.scr")),
     'attachment "screensaver.scr" has a blocked extension (.scr)'),
    ("nested-eicar", lambda: nested_with((EICAR.encode(), "eicar.com.txt")), "virus EICAR-Test-File found"),
    ("blocked-type", blocked_type,
     'attachment "setup.dat" has a blocked content type (application/x-msdownload)'),
]


@pytest.mark.parametrize("build,reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_findings_are_rejected(srv, build, reason):
    before = len(srv.queued())
    assert send(srv, build()) == rejected(reason)
    assert len(srv.queued()) == before


def test_clean_message_is_accepted_and_spooled_intact(srv):
    m = attach(mail("Quarterly figures attached.\n"), b"%PDF-1.4\n" + bytes(range(256)) * 8, "report.pdf",
               "application/pdf")
    attach(m, zip_of({"notes.txt": b"fine", "img/logo.png": b"\x89PNG"}), "bundle.zip", "application/zip")
    code, text = send(srv, m)
    assert code == 250, text
    _, spooled = srv.read_queued(text.rsplit(" ", 1)[1])
    assert spooled.endswith(m.as_bytes())
    assert b"X-Postern-Scan" not in spooled


def test_tag_mode_adds_a_header_and_accepts(start):
    srv = start(plugins=[component("attachment-scan", {"action": "tag"}, max_memory="64MiB")])
    code, text = send(srv, attach(mail(), EXE, "invoice.exe"))
    assert code == 250, text
    _, spooled = srv.read_queued(text.rsplit(" ", 1)[1])
    head = spooled.split(b"\r\n\r\n", 1)[0].decode()
    assert 'X-Postern-Scan: attachment "invoice.exe" has a blocked extension (.exe)' in head.split("\r\n")
    code, text = send(srv, mail("clean\n"))
    assert code == 250
    assert b"X-Postern-Scan" not in srv.read_queued(text.rsplit(" ", 1)[1])[1]


def test_oversize_messages(start):
    big = attach(mail(), b"A" * 5000, "big.txt", "text/plain")
    srv = start(plugins=[component("attachment-scan", {"max_scan_size": 2000, "on_oversize": "defer"})])
    assert send(srv, big) == (451, "4.7.0 Message too large to scan, try again later")
    srv = start(plugins=[component("attachment-scan", {"max_scan_size": 2000})])
    # Not scanned (on_oversize = "pass"), so even a blocked attachment passes.
    assert send(srv, attach(attach(mail(), b"A" * 5000, "big.txt", "text/plain"), EXE, "x.exe"))[0] == 250


def test_configured_extensions_replace_the_default(start):
    srv = start(plugins=[component("attachment-scan", {"blocked_extensions": [".ISO"]})])
    assert send(srv, attach(mail(), EXE, "disk.iso")) == rejected('attachment "disk.iso" has a blocked extension (.iso)')
    assert send(srv, attach(mail(), EXE, "tool.exe"))[0] == 250
