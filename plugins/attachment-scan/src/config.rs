//! The `[plugin.config]` table of attachment-scan and its validation:
//! blocked extensions and types, archive scanning, size and structure
//! limits, and what a finding does. Trusts nothing: every value is checked.

use postern_sdk::Deserialize;

/// The extensions blocked by default (Windows executables and scripts).
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "exe", "scr", "js", "vbs", "bat", "cmd", "com", "pif", "jar", "msi", "ps1", "hta", "wsf",
    "cpl", "lnk", "reg", "vbe", "jse",
];

/// The content types blocked by default.
pub const DEFAULT_TYPES: &[&str] = &[
    "application/x-msdownload",
    "application/x-dosexec",
    "application/x-msdos-program",
    "application/hta",
    "application/x-ms-shortcut",
];

/// What a finding does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// 554 5.7.0 Message rejected: <reason>.
    #[default]
    Reject,
    /// Accept, adding `X-Postern-Scan: <reason>`.
    Tag,
}

/// What a message larger than `max_scan_size` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOversize {
    /// Pass unscanned (logged).
    #[default]
    Pass,
    /// 451 4.7.0 (logged).
    Defer,
}

/// The configuration as written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub blocked_extensions: Option<Vec<String>>,
    #[serde(default)]
    pub blocked_types: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub scan_archives: bool,
    #[serde(default = "default_max_scan_size")]
    pub max_scan_size: u64,
    #[serde(default)]
    pub on_oversize: OnOversize,
    #[serde(default)]
    pub action: Action,
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    #[serde(default = "default_max_parts")]
    pub max_parts: usize,
}

fn yes() -> bool {
    true
}
fn default_max_scan_size() -> u64 {
    10 << 20
}
fn default_max_depth() -> usize {
    10
}
fn default_max_parts() -> usize {
    500
}

/// The largest `max_scan_size` accepted: the whole message is held in the
/// plugin's memory, decoded parts beside it.
pub const MAX_SCAN_SIZE: u64 = 64 << 20;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lower-case, without the dot.
    pub blocked_extensions: Vec<String>,
    /// Lower-case "type/subtype".
    pub blocked_types: Vec<String>,
    pub scan_archives: bool,
    pub max_scan_size: u64,
    pub on_oversize: OnOversize,
    pub action: Action,
    pub max_depth: usize,
    pub max_parts: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        postern_sdk::parse_config::<Config>("{}")
            .and_then(Config::validate)
            .expect("the defaults are valid")
    }
}

fn extension(e: &str) -> Result<String, String> {
    let ext = e.trim().trim_start_matches('.').to_lowercase();
    let ok = !ext.is_empty()
        && ext.len() <= 32
        && ext
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(ext)
    } else {
        Err(format!(
            "blocked_extensions: {e:?} is not an extension (letters and digits, e.g. \"exe\" or \".exe\")"
        ))
    }
}

fn content_type(t: &str) -> Result<String, String> {
    let lower = t.trim().to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    };
    match lower.split_once('/') {
        Some((ty, sub)) if token(ty) && token(sub) => Ok(lower),
        _ => Err(format!(
            "blocked_types: {t:?} is not a content type (type/subtype, e.g. \"application/x-msdownload\")"
        )),
    }
}

impl Config {
    /// Validate and normalize.
    pub fn validate(self) -> Result<Settings, String> {
        let blocked_extensions = match self.blocked_extensions {
            None => DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            Some(list) => list
                .iter()
                .map(|e| extension(e))
                .collect::<Result<_, _>>()?,
        };
        let blocked_types = match self.blocked_types {
            None => DEFAULT_TYPES.iter().map(|s| s.to_string()).collect(),
            Some(list) => list
                .iter()
                .map(|t| content_type(t))
                .collect::<Result<_, _>>()?,
        };
        if self.max_scan_size == 0 || self.max_scan_size > MAX_SCAN_SIZE {
            return Err(format!(
                "max_scan_size must be between 1 and {MAX_SCAN_SIZE} bytes, not {}",
                self.max_scan_size
            ));
        }
        if !(1..=100).contains(&self.max_depth) {
            return Err(format!(
                "max_depth must be between 1 and 100, not {}",
                self.max_depth
            ));
        }
        if !(1..=10_000).contains(&self.max_parts) {
            return Err(format!(
                "max_parts must be between 1 and 10000, not {}",
                self.max_parts
            ));
        }
        Ok(Settings {
            blocked_extensions,
            blocked_types,
            scan_archives: self.scan_archives,
            max_scan_size: self.max_scan_size,
            on_oversize: self.on_oversize,
            action: self.action,
            max_depth: self.max_depth,
            max_parts: self.max_parts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Settings, String> {
        postern_sdk::parse_config::<Config>(json)?.validate()
    }

    #[test]
    fn defaults() {
        let s = Settings::default();
        assert_eq!(s.blocked_extensions.len(), 18);
        assert!(s.blocked_extensions.contains(&"jse".to_string()));
        assert_eq!(s.blocked_types.len(), 5);
        assert!(s.scan_archives);
        assert_eq!(s.max_scan_size, 10 << 20);
        assert_eq!(s.on_oversize, OnOversize::Pass);
        assert_eq!(s.action, Action::Reject);
        assert_eq!((s.max_depth, s.max_parts), (10, 500));
    }

    #[test]
    fn full() {
        let s = parse(
            r#"{"blocked_extensions": [".EXE", "iso"], "blocked_types": ["Application/X-Foo"],
                "scan_archives": false, "max_scan_size": 1000, "on_oversize": "defer",
                "action": "tag", "max_depth": 3, "max_parts": 20}"#,
        )
        .unwrap();
        assert_eq!(s.blocked_extensions, vec!["exe", "iso"]);
        assert_eq!(s.blocked_types, vec!["application/x-foo"]);
        assert!(!s.scan_archives);
        assert_eq!(s.on_oversize, OnOversize::Defer);
        assert_eq!(s.action, Action::Tag);
        assert!(
            parse(r#"{"blocked_extensions": []}"#)
                .unwrap()
                .blocked_extensions
                .is_empty()
        );
    }

    #[test]
    fn refusals() {
        let table = [
            (r#"{"bogus": 1}"#, "unknown field `bogus`"),
            (
                r#"{"blocked_extensions": ["e x e"]}"#,
                "\"e x e\" is not an extension",
            ),
            (
                r#"{"blocked_extensions": ["."]}"#,
                "\".\" is not an extension",
            ),
            (
                r#"{"blocked_types": ["application"]}"#,
                "\"application\" is not a content type",
            ),
            (
                r#"{"blocked_types": ["a/b c"]}"#,
                "\"a/b c\" is not a content type",
            ),
            (r#"{"max_scan_size": 0}"#, "max_scan_size must be between"),
            (
                r#"{"max_scan_size": 999999999999}"#,
                "max_scan_size must be between",
            ),
            (r#"{"max_depth": 0}"#, "max_depth must be between"),
            (r#"{"max_parts": 0}"#, "max_parts must be between"),
            (r#"{"action": "drop"}"#, "unknown variant `drop`"),
            (r#"{"on_oversize": "reject"}"#, "unknown variant `reject`"),
        ];
        for (json, want) in table {
            let err = parse(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
