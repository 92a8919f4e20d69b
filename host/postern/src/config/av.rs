//! `[av]`: the virus scanner plugins granted "av-scan" may use. Input: the
//! operator's file; errors name the file and line.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ByteSize, ConfigError, Ctx};
use crate::server::av::{AvSettings, ClamdAddress};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AvSection {
    clamd: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_size: Option<ByteSize>,
}

pub(super) fn build(cx: &Ctx, s: &AvSection) -> Result<AvSettings, ConfigError> {
    let clamd = match &s.clamd {
        None => None,
        Some(v) => {
            let t = v.get_ref();
            Some(if let Some(p) = t.strip_prefix("unix:") {
                ClamdAddress::Unix(cx.resolve(p))
            } else if let Some(h) = t.strip_prefix("inet:") {
                if h.rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                {
                    return Err(cx.at(v, format!("av.clamd {t:?}: expected inet:host:port")));
                }
                ClamdAddress::Inet(h.to_string())
            } else {
                return Err(cx.at(
                    v,
                    format!("av.clamd {t:?}: expected unix:/path or inet:host:port"),
                ));
            })
        }
    };
    Ok(AvSettings {
        clamd,
        timeout: cx.positive_duration(&s.timeout, "av.timeout", Duration::from_secs(30))?,
        max_size: s.max_size.map_or(25 << 20, |b| b.0),
    })
}
