//! `[record]`: recording sessions for `postern replay` (off by default).
//! Input: the operator's file; errors name the file and line.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{ByteSize, ConfigError, Ctx};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordSection {
    enabled: Option<bool>,
    dir: Option<String>,
    sample: Option<Spanned<f64>>,
    max_body: Option<ByteSize>,
    file_size: Option<ByteSize>,
    keep: Option<Spanned<usize>>,
}

/// Which sessions are recorded, how much of them, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordSettings {
    pub enabled: bool,
    /// Rotating files `sessions-*.jsonl` (mode 0600), default
    /// `<data_dir>/recordings`.
    pub dir: PathBuf,
    /// The share of sessions recorded (0 < sample <= 1).
    pub sample: f64,
    /// Bytes of each message body kept (0: the header section only).
    pub max_body: usize,
    /// A file is closed and a new one started at this size.
    pub file_size: u64,
    /// Files kept (the oldest are deleted).
    pub keep: usize,
}

pub(super) fn build(
    cx: &Ctx,
    s: &RecordSection,
    data_dir: &Path,
) -> Result<RecordSettings, ConfigError> {
    let sample = match &s.sample {
        None => 1.0,
        Some(v) if *v.get_ref() > 0.0 && *v.get_ref() <= 1.0 => *v.get_ref(),
        Some(v) => {
            return Err(cx.at(
                v,
                format!(
                    "record.sample must be a fraction in (0, 1], not {}",
                    v.get_ref()
                ),
            ));
        }
    };
    let keep = match &s.keep {
        None => 8,
        Some(k) if *k.get_ref() >= 1 => *k.get_ref(),
        Some(k) => return Err(cx.at(k, "record.keep must be at least 1")),
    };
    Ok(RecordSettings {
        enabled: s.enabled.unwrap_or(false),
        dir: s
            .dir
            .as_deref()
            .map(|d| cx.resolve(d))
            .unwrap_or_else(|| data_dir.join("recordings")),
        sample,
        max_body: s.max_body.as_ref().map_or(0, |b| b.0 as usize),
        file_size: s.file_size.as_ref().map_or(64 << 20, |b| b.0.max(4096)),
        keep,
    })
}
