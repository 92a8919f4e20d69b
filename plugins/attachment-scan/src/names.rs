//! File-name checks: the extension a desktop would act on (the last one,
//! after Windows' stripping of trailing dots and spaces), and safe quoting of
//! hostile names in replies and headers. Trusts nothing: names come from
//! MIME parameters (RFC 2183 filename, RFC 2045 name, RFC 2231 encoded) or
//! zip directories.

/// The file name proper: the last path component ('/' or '\').
fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

/// The extension that counts, lower-case without the dot: "invoice.PDF.exe
/// . " gives "exe" (Windows ignores trailing dots and spaces, and the last
/// extension wins, which also catches double extensions).
pub fn extension(name: &str) -> Option<String> {
    let trimmed =
        base_name(name).trim_end_matches(|c: char| c == '.' || c.is_whitespace() || c == '\0');
    let (_, ext) = trimmed.rsplit_once('.')?;
    let ext = ext.trim();
    (!ext.is_empty()).then(|| ext.to_lowercase())
}

/// The blocked extension of `name`, if it has one.
pub fn blocked_extension(name: &str, blocked: &[String]) -> Option<String> {
    let ext = extension(name)?;
    blocked.contains(&ext).then_some(ext)
}

/// A hostile name fit for an SMTP reply or a header value: printable ASCII
/// (others become '?', double quotes become '\''), at most `max` characters,
/// keeping the end (where the extension is).
pub fn display(name: &str, max: usize) -> String {
    let clean: Vec<char> = name
        .chars()
        .map(|c| match c {
            '"' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect();
    if clean.len() <= max {
        return clean.into_iter().collect();
    }
    let keep = max.saturating_sub(3);
    let mut out = String::from("...");
    out.extend(&clean[clean.len() - keep..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked() -> Vec<String> {
        ["exe", "js", "scr", "lnk"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn extensions() {
        let table = [
            ("invoice.exe", Some("exe")),
            ("INVOICE.EXE", Some("exe")),
            ("invoice.pdf.exe", Some("exe")),
            ("invoice.exe.pdf", None),
            ("invoice.exe.", Some("exe")),
            ("invoice.exe . .", Some("exe")),
            ("invoice.exe\u{0}", Some("exe")),
            ("C:\\Users\\x\\run.scr", Some("scr")),
            ("dir/sub/app.js", Some("js")),
            ("dir.exe/readme", None),
            ("readme", None),
            (".exe", Some("exe")),
            ("report.pdf", None),
            ("shortcut.LnK", Some("lnk")),
            ("", None),
            ("...", None),
        ];
        for (name, want) in table {
            assert_eq!(
                blocked_extension(name, &blocked()).as_deref(),
                want,
                "{name:?}"
            );
        }
        assert_eq!(extension("a.tar.gz").as_deref(), Some("gz"));
        assert_eq!(extension("noext"), None);
    }

    #[test]
    fn displaying() {
        assert_eq!(display("a\"b\r\n.exe", 100), "a'b??.exe");
        assert_eq!(display("r\u{e9}sum\u{e9}.exe", 100), "r?sum?.exe");
        let long = format!("{}.exe", "x".repeat(200));
        let shown = display(&long, 20);
        assert_eq!(shown.len(), 20);
        assert!(shown.starts_with("...") && shown.ends_with("xxx.exe"));
    }
}
