//! Where a local recipient's mail goes: `<maildir_root>/<domain>/<local-part>/`.
//! The local part is chosen by the (untrusted) client, so it is mapped to a file name
//! that can never leave the root: lower-cased ASCII letters, digits and `-_+=.` pass
//! through (a leading dot does not), every other byte — `/`, `%`, NUL, quotes,
//! spaces, UTF-8 — becomes `%XX`. The mapping is injective, so two different
//! addresses never share a mailbox by accident. The bare `postmaster` recipient
//! (RFC 5321 §4.5.1) goes to postmaster@<first local domain>.

use std::path::PathBuf;

use postern_protocol::{EnhancedCode, Mailbox};

use crate::outcome::Diagnostic;
use crate::settings::Settings;

/// Longest file name we create (common file-system limit).
const MAX_NAME: usize = 255;

/// A local recipient's mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMailbox {
    /// The Maildir (holding `tmp/`, `new/`, `cur/`).
    pub dir: PathBuf,
    /// The address written to `Delivered-To:`.
    pub address: String,
}

/// One path component for `text`: safe characters kept, the rest `%XX`-encoded.
pub fn encode_component(text: &str) -> String {
    if text.is_empty() {
        return "%00".into();
    }
    let mut out = String::with_capacity(text.len());
    for (i, b) in text.bytes().enumerate() {
        let safe = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'-' | b'_' | b'+' | b'=')
            || (b == b'.' && i > 0);
        if safe {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unknown(address: &str, why: &str) -> Diagnostic {
    Diagnostic::local(
        EnhancedCode::new(5, 1, 3),
        format!("bad local recipient <{address}>: {why}"),
    )
}

/// The mailbox for a recipient of a local domain. Errors are permanent.
pub fn local_mailbox(address: &str, settings: &Settings) -> Result<LocalMailbox, Diagnostic> {
    let first = settings
        .local_domains
        .first()
        .ok_or_else(|| unknown(address, "no local domains configured"))?;
    let (local, domain) = if address.eq_ignore_ascii_case("postmaster") {
        ("postmaster".to_string(), first.clone())
    } else {
        let m = Mailbox::parse(address).map_err(|e| unknown(address, &e.to_string()))?;
        let domain = m.domain.normalized();
        let domain = settings
            .local_domains
            .iter()
            .find(|d| d.eq_ignore_ascii_case(&domain))
            .ok_or_else(|| unknown(address, "not a local domain"))?
            .clone();
        (m.local_part_unquoted().to_ascii_lowercase(), domain)
    };
    let domain_dir = encode_component(&domain.to_ascii_lowercase());
    let local_dir = encode_component(&local);
    if domain_dir.len() > MAX_NAME || local_dir.len() > MAX_NAME {
        return Err(unknown(address, "mailbox name too long"));
    }
    let canonical = if address.eq_ignore_ascii_case("postmaster") {
        format!("postmaster@{domain}")
    } else {
        address.to_string()
    };
    Ok(LocalMailbox {
        dir: settings.maildir_root.join(domain_dir).join(local_dir),
        address: canonical,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Component, Path};

    fn settings() -> Settings {
        Settings::new(
            "mx.example.test",
            &["example.test".into(), "other.test".into()],
            Path::new("/srv/data"),
        )
    }

    #[test]
    fn component_encoding_table() {
        let table = [
            ("alice", "alice"),
            ("first.last", "first.last"),
            ("a+tag=x_y-z", "a+tag=x_y-z"),
            ("", "%00"),
            (".", "%2E"),
            ("..", "%2E."),
            (".hidden", "%2Ehidden"),
            ("../../etc/passwd", "%2E.%2F..%2Fetc%2Fpasswd"),
            ("a/b", "a%2Fb"),
            ("a\0b", "a%00b"),
            ("100%", "100%25"),
            ("john doe", "john%20doe"),
            ("\"q\"", "%22q%22"),
            ("Upper", "%55pper"),
            ("ü", "%C3%BC"),
            ("a\\b", "a%5Cb"),
        ];
        for (input, want) in table {
            assert_eq!(encode_component(input), want, "{input:?}");
        }
    }

    #[test]
    fn mailboxes_never_escape_the_root() {
        let s = settings();
        let root = &s.maildir_root;
        for addr in [
            "alice@example.test",
            "ALICE@Example.TEST.",
            "\"../../x\"@example.test",
            "\"a/b\"@example.test",
            "\".\"@example.test",
            "\"\"@example.test",
            "\"\\\\\"@example.test",
            "Postmaster",
            "../x@example.test",
        ] {
            let Ok(m) = local_mailbox(addr, &s) else {
                continue; // refused is safe too
            };
            let rel = m.dir.strip_prefix(root).unwrap();
            let parts: Vec<_> = rel.components().collect();
            assert_eq!(parts.len(), 2, "{addr:?} -> {}", m.dir.display());
            for p in parts {
                let Component::Normal(name) = p else {
                    panic!("{addr:?} -> {}", m.dir.display())
                };
                assert!(!name.to_str().unwrap().starts_with('.'), "{addr:?}");
            }
        }
    }

    #[test]
    fn addresses_map_to_directories() {
        let s = settings();
        let dir = |a: &str| {
            local_mailbox(a, &s)
                .unwrap()
                .dir
                .strip_prefix(&s.maildir_root)
                .unwrap()
                .to_path_buf()
        };
        assert_eq!(dir("alice@example.test"), Path::new("example.test/alice"));
        assert_eq!(dir("Alice@EXAMPLE.test."), Path::new("example.test/alice"));
        assert_eq!(dir("bob@other.test"), Path::new("other.test/bob"));
        assert_eq!(
            dir("\"john doe\"@example.test"),
            Path::new("example.test/john%20doe")
        );
        assert_eq!(dir("postmaster"), Path::new("example.test/postmaster"));
        assert_eq!(
            local_mailbox("postmaster", &s).unwrap().address,
            "postmaster@example.test"
        );
        assert!(local_mailbox("x@elsewhere.test", &s).is_err());
        assert!(
            local_mailbox("not an address", &s)
                .unwrap_err()
                .is_permanent()
        );
    }
}
