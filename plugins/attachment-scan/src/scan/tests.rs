//! A table of crafted MIME messages, hostile and clean.

use super::*;
use crate::eicar::EICAR;
use crate::zip::tests::stored_zip;

/// Standard base64 with CRLF every 76 characters.
fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    let mut wrapped = String::new();
    for (i, c) in out.chars().enumerate() {
        if i > 0 && i % 76 == 0 {
            wrapped.push_str("\r\n");
        }
        wrapped.push(c);
    }
    wrapped
}

fn eicar() -> String {
    String::from_utf8(EICAR.to_vec()).unwrap()
}

/// A multipart/mixed message: a text part plus the given raw parts.
fn mixed(parts: &[String]) -> String {
    let mut m = String::from(
        "From: a@example.net\r\nTo: b@example.org\r\nSubject: test\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
         preamble\r\n--outer\r\nContent-Type: text/plain\r\n\r\nHello, see attached.\r\n",
    );
    for p in parts {
        m.push_str("--outer\r\n");
        m.push_str(p);
        m.push_str("\r\n");
    }
    m.push_str("--outer--\r\n");
    m
}

/// An attachment part with base64 content.
fn attachment(ctype: &str, disposition: &str, data: &[u8]) -> String {
    format!(
        "Content-Type: {ctype}\r\nContent-Disposition: {disposition}\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}",
        b64(data)
    )
}

fn ext(name: &str, e: &str) -> Option<Finding> {
    Some(Finding::Extension {
        name: name.into(),
        ext: e.into(),
    })
}

fn virus() -> Option<Finding> {
    Some(Finding::Virus("EICAR-Test-File"))
}

fn member(archive: Option<&str>, m: &str, e: &str) -> Option<Finding> {
    Some(Finding::ArchiveMember {
        archive: archive.map(String::from),
        member: m.into(),
        ext: e.into(),
    })
}

fn cases() -> Vec<(&'static str, String, Option<Finding>)> {
    let pdf = attachment(
        "application/pdf; name=\"report.pdf\"",
        "attachment; filename=\"report.pdf\"",
        b"%PDF-1.4 fake",
    );
    let exe = |name: &str| {
        attachment(
            "application/octet-stream",
            &format!("attachment; filename=\"{name}\""),
            b"MZ\x90\x00",
        )
    };
    let nested_alt = format!(
        "Subject: alt\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n\
         --alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
         --alt\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n\
         --inner\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n\
         --inner\r\n{}\r\n--inner--\r\n\
         --alt--\r\n",
        attachment(
            "application/javascript",
            "attachment; filename=\"run.js\"",
            b"alert(1)"
        )
    );
    let forwarded = format!(
        "Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"fwd.eml\"\r\n\r\n\
         Subject: inner\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"in\"\r\n\r\n\
         --in\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n\
         --in\r\n{}\r\n--in--\r\n",
        exe("setup.exe")
    );
    let forwarded_clean = format!(
        "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n\
         --in\r\nContent-Type: text/plain\r\n\r\nfine\r\n--in\r\n{pdf}\r\n--in--\r\n"
    );
    let rfc2231 = attachment(
        "application/octet-stream",
        "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.exe",
        b"MZ",
    );
    let rfc2231_continued = attachment(
        "application/octet-stream",
        "attachment;\r\n filename*0=\"inv\";\r\n filename*1=\"oice.sc\";\r\n filename*2=\"r\"",
        b"MZ",
    );
    let rfc2047 = attachment(
        "application/octet-stream; name=\"=?UTF-8?B?ZmFjdHVyZS5leGU=?=\"",
        "attachment",
        b"MZ",
    );
    let name_only_in_type = attachment(
        "application/octet-stream; name=\"payload.vbs\"",
        "attachment; filename=\"harmless.txt\"",
        b"x",
    );
    let zip_exe = stored_zip(&[("docs/readme.txt", b"hi"), ("docs/invoice.pdf.exe", b"MZ")]);
    let zip_clean = stored_zip(&[("a.txt", b"a"), ("b.pdf", b"b")]);
    let zip_disguised = stored_zip(&[("screensaver.scr", b"MZ")]);
    let qp_eicar = {
        let e = eicar();
        let (a, b) = e.split_at(30);
        format!(
            "Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{a}=\r\n{b}"
        )
    };
    let mut deep = String::from("Subject: deep\r\nMIME-Version: 1.0\r\n");
    for i in 0..12 {
        deep.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    deep.push_str("Content-Type: text/plain\r\n\r\nbottom\r\n");
    for i in (0..12).rev() {
        deep.push_str(&format!("--b{i}--\r\n"));
    }
    let many: Vec<String> = (0..600)
        .map(|i| format!("Content-Type: text/plain\r\n\r\npart {i}"))
        .collect();

    vec![
        (
            "plain text",
            "Subject: hi\r\n\r\nHello world\r\n".into(),
            None,
        ),
        (
            "plain EICAR body",
            format!("Subject: hi\r\n\r\n{}\r\n", eicar()),
            virus(),
        ),
        ("headers only", "Subject: hi\r\n".into(), None),
        ("not even headers", format!("{}\r\n", eicar()), virus()),
        ("clean pdf", mixed(std::slice::from_ref(&pdf)), None),
        (
            "mentions setup.exe in text",
            mixed(&["Content-Type: text/plain\r\n\r\nrun setup.exe".into()]),
            None,
        ),
        (
            "EICAR base64 attachment",
            mixed(&[attachment(
                "application/octet-stream",
                "attachment; filename=\"eicar.com.txt\"",
                EICAR,
            )]),
            virus(),
        ),
        ("EICAR quoted-printable", mixed(&[qp_eicar]), virus()),
        (
            "exe attachment",
            mixed(&[exe("invoice.exe")]),
            ext("invoice.exe", "exe"),
        ),
        (
            "double extension",
            mixed(&[exe("invoice.pdf.exe")]),
            ext("invoice.pdf.exe", "exe"),
        ),
        (
            "trailing dots and spaces",
            mixed(&[exe("invoice.exe. . ")]),
            ext("invoice.exe. . ", "exe"),
        ),
        (
            "upper case",
            mixed(&[exe("INVOICE.EXE")]),
            ext("INVOICE.EXE", "exe"),
        ),
        ("exe.pdf is a pdf", mixed(&[exe("invoice.exe.pdf")]), None),
        (
            "nested mixed inside alternative",
            nested_alt,
            ext("run.js", "js"),
        ),
        (
            "message/rfc822 with exe",
            mixed(&[forwarded]),
            ext("setup.exe", "exe"),
        ),
        ("message/rfc822 clean", mixed(&[forwarded_clean]), None),
        (
            "RFC 2231 filename",
            mixed(&[rfc2231]),
            ext("r\u{e9}sum\u{e9}.exe", "exe"),
        ),
        (
            "RFC 2231 continuation",
            mixed(&[rfc2231_continued]),
            ext("invoice.scr", "scr"),
        ),
        (
            "RFC 2047 name",
            mixed(&[rfc2047]),
            ext("facture.exe", "exe"),
        ),
        (
            "name only in Content-Type",
            mixed(&[name_only_in_type]),
            ext("payload.vbs", "vbs"),
        ),
        (
            "blocked type",
            mixed(&[attachment(
                "application/x-msdownload; name=\"setup.dat\"",
                "attachment",
                b"MZ",
            )]),
            Some(Finding::ContentType {
                name: Some("setup.dat".into()),
                ctype: "application/x-msdownload".into(),
            }),
        ),
        (
            "blocked type unnamed",
            mixed(&[attachment("Application/X-DosExec", "inline", b"MZ")]),
            Some(Finding::ContentType {
                name: None,
                ctype: "application/x-dosexec".into(),
            }),
        ),
        (
            "zip with inner exe",
            mixed(&[attachment(
                "application/zip",
                "attachment; filename=\"files.zip\"",
                &zip_exe,
            )]),
            member(Some("files.zip"), "docs/invoice.pdf.exe", "exe"),
        ),
        (
            "clean zip",
            mixed(&[attachment(
                "application/zip",
                "attachment; filename=\"files.zip\"",
                &zip_clean,
            )]),
            None,
        ),
        (
            "zip sniffed by content",
            mixed(&[attachment(
                "application/octet-stream",
                "attachment; filename=\"data.bin\"",
                &zip_disguised,
            )]),
            member(Some("data.bin"), "screensaver.scr", "scr"),
        ),
        (
            "zip unnamed",
            mixed(&[attachment(
                "application/x-zip-compressed",
                "attachment",
                &zip_exe,
            )]),
            member(None, "docs/invoice.pdf.exe", "exe"),
        ),
        (
            "broken zip",
            mixed(&[attachment(
                "application/zip",
                "attachment; filename=\"x.zip\"",
                b"PK\x03\x04garbage",
            )]),
            None,
        ),
        ("too deep", deep, Some(Finding::TooDeep(10))),
        (
            "too many parts",
            mixed(&many),
            Some(Finding::TooManyParts(500)),
        ),
    ]
}

#[test]
fn message_table() {
    let settings = Settings::default();
    for (label, message, want) in cases() {
        assert_eq!(scan(message.as_bytes(), &settings), want, "{label}");
    }
}

#[test]
fn zip_scanning_can_be_turned_off() {
    let settings = Settings {
        scan_archives: false,
        ..Settings::default()
    };
    let z = stored_zip(&[("a.exe", b"MZ")]);
    let m = mixed(&[attachment(
        "application/zip",
        "attachment; filename=\"a.zip\"",
        &z,
    )]);
    assert_eq!(scan(m.as_bytes(), &settings), None);
    assert!(scan(m.as_bytes(), &Settings::default()).is_some());
}

#[test]
fn custom_lists() {
    let settings = Settings {
        blocked_extensions: vec!["iso".into()],
        blocked_types: vec!["image/png".into()],
        ..Settings::default()
    };
    let iso = mixed(&[attachment(
        "application/octet-stream",
        "attachment; filename=\"disk.ISO\"",
        b"x",
    )]);
    assert_eq!(scan(iso.as_bytes(), &settings), ext("disk.ISO", "iso"));
    let png = mixed(&[attachment("image/png", "inline", b"\x89PNG")]);
    assert_eq!(
        scan(png.as_bytes(), &settings),
        Some(Finding::ContentType {
            name: None,
            ctype: "image/png".into()
        })
    );
    let exe = mixed(&[attachment(
        "application/octet-stream",
        "attachment; filename=\"a.exe\"",
        b"MZ",
    )]);
    assert_eq!(
        scan(exe.as_bytes(), &settings),
        None,
        "the default list was replaced"
    );
}

#[test]
fn reasons() {
    let table = [
        (
            ext("invoice.exe", "exe").unwrap(),
            "attachment \"invoice.exe\" has a blocked extension (.exe)",
        ),
        (
            ext("r\u{e9}sum\u{e9}.exe", "exe").unwrap(),
            "attachment \"r?sum?.exe\" has a blocked extension (.exe)",
        ),
        (
            ext("a\"b\r\n.exe", "exe").unwrap(),
            "attachment \"a'b??.exe\" has a blocked extension (.exe)",
        ),
        (
            Finding::ContentType {
                name: Some("x.dat".into()),
                ctype: "application/hta".into(),
            },
            "attachment \"x.dat\" has a blocked content type (application/hta)",
        ),
        (
            Finding::ContentType {
                name: None,
                ctype: "application/hta".into(),
            },
            "a part has a blocked content type (application/hta)",
        ),
        (
            member(Some("files.zip"), "setup.exe", "exe").unwrap(),
            "archive \"files.zip\" contains \"setup.exe\" with a blocked extension (.exe)",
        ),
        (
            member(None, "setup.exe", "exe").unwrap(),
            "an archive contains \"setup.exe\" with a blocked extension (.exe)",
        ),
        (
            Finding::Virus("EICAR-Test-File"),
            "virus EICAR-Test-File found",
        ),
        (
            Finding::TooDeep(10),
            "MIME structure nested more than 10 levels deep",
        ),
        (Finding::TooManyParts(500), "more than 500 MIME parts"),
    ];
    for (finding, want) in table {
        assert_eq!(finding.to_string(), want);
    }
    // The longest reason still fits an SMTP reply with its prefix.
    let long = member(Some(&"a".repeat(1000)), &"b".repeat(1000), &"c".repeat(100)).unwrap();
    assert!("Message rejected: ".len() + long.to_string().len() <= 400);
}

/// Hostile nesting of message/rfc822 without encoding: the parser builds it
/// without recursion, the walker stops at `max_depth`, and `dismantle`
/// tears it down without recursion — all on a small stack.
#[test]
fn deep_message_nesting_on_a_small_stack() {
    let levels = 450; // under max_parts Content-Type lines
    let mut m = String::new();
    for _ in 0..levels {
        m.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    m.push_str("Subject: bottom\r\n\r\nbody\r\n");
    let result = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || scan(m.as_bytes(), &Settings::default()))
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert_eq!(result, Some(Finding::TooDeep(10)));
}

#[test]
fn content_type_lines_are_counted() {
    assert_eq!(
        content_type_lines(b"Content-Type: a\r\ncontent-TYPE: b\r\nX: content-type\r\n"),
        2
    );
    assert_eq!(content_type_lines(b""), 0);
    let mut many = String::new();
    for _ in 0..501 {
        many.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    assert_eq!(
        scan(many.as_bytes(), &Settings::default()),
        Some(Finding::TooManyParts(500))
    );
}

/// Arbitrary bytes never panic the scanner.
#[test]
fn garbage_never_panics() {
    let mut seed: u32 = 12345;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let alphabet: &[&[u8]] = &[
        b"--b\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"PK\x03\x04",
        b"PK\x05\x06",
        b"=?UTF-8?B?",
        b"filename*0*=",
        b"\xff\xfe",
        b"x",
    ];
    for _ in 0..300 {
        let mut m = Vec::new();
        for _ in 0..(next() % 60) {
            m.extend_from_slice(alphabet[(next() as usize) % alphabet.len()]);
        }
        let _ = scan(&m, &Settings::default());
    }
}

/// Deep nesting hidden in base64 (where mail-parser would recurse) is
/// renamed away and walked by the scanner under its own limits, on a small
/// stack, whatever the part limit.
#[test]
fn encoded_deep_nesting_on_a_small_stack() {
    let lenient = Settings {
        max_parts: 10_000,
        ..Settings::default()
    };
    for (levels, settings, want) in [
        (300, Settings::default(), Finding::TooDeep(10)),
        (3000, Settings::default(), Finding::TooManyParts(500)),
        (9000, lenient, Finding::TooDeep(10)),
    ] {
        let mut inner = String::new();
        for _ in 0..levels {
            inner.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        inner.push_str("Subject: bottom\r\n\r\nbody\r\n");
        let m = mixed(&[format!(
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            b64(inner.as_bytes())
        )]);
        let got = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || scan(m.as_bytes(), &settings))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(got, Some(want), "{levels} levels");
    }
}

/// Encoded forwarded messages and digests are still looked into.
#[test]
fn encoded_and_digest_messages_are_scanned() {
    let inner = mixed(&[attachment(
        "application/octet-stream",
        "attachment; filename=\"tool.exe\"",
        b"MZ",
    )]);
    let encoded = mixed(&[format!(
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64(inner.as_bytes())
    )]);
    assert_eq!(
        scan(encoded.as_bytes(), &Settings::default()),
        ext("tool.exe", "exe")
    );
    let twice = mixed(&[format!(
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64(encoded.as_bytes())
    )]);
    assert_eq!(
        scan(twice.as_bytes(), &Settings::default()),
        ext("tool.exe", "exe")
    );
    let digest = format!(
        "Subject: digest\r\nMIME-Version: 1.0\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n\
         --d\r\n\r\nSubject: one\r\n\r\nfirst\r\n\
         --d\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--d--\r\n",
        b64(format!("Subject: two\r\n\r\n{}", eicar()).as_bytes())
    );
    assert_eq!(scan(digest.as_bytes(), &Settings::default()), virus());
    let clean_digest = digest.replace(
        &b64(format!("Subject: two\r\n\r\n{}", eicar()).as_bytes()),
        &b64(b"Subject: two\r\n\r\nfine"),
    );
    assert_eq!(scan(clean_digest.as_bytes(), &Settings::default()), None);
}
