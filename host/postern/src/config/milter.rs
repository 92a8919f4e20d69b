//! `[[milter]]`: milters in the policy chain, placed among the plugins in
//! the order of the file. Input: the operator's file; errors name the file
//! and line.

use serde::Deserialize;
use toml::Spanned;

use postern_plugin::{MilterAddress, MilterSpec, MilterTimeouts, OnError};

use super::{ConfigError, Ctx};

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OnErrorSetting {
    /// 451 4.3.0 (Postfix's milter_default_action = tempfail).
    #[default]
    Tempfail,
    /// Go on as if the milter had no objection.
    Accept,
    /// 554 5.7.0.
    Reject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MilterSection {
    name: Spanned<String>,
    address: Spanned<String>,
    #[serde(default)]
    on_error: OnErrorSetting,
    connect_timeout: Option<Spanned<String>>,
    command_timeout: Option<Spanned<String>>,
    end_of_message_timeout: Option<Spanned<String>>,
}

/// The milters, each with the number of `[[plugin]]` entries before it in
/// the file (`plugin_offsets`: where each plugin entry starts).
pub(super) fn build(
    cx: &Ctx,
    sections: &[MilterSection],
    plugin_offsets: &[usize],
    plugin_names: &[String],
) -> Result<Vec<MilterSpec>, ConfigError> {
    let d = MilterTimeouts::default();
    let mut out: Vec<MilterSpec> = Vec::new();
    for m in sections {
        let name = super::member_name(cx, &m.name, "milter")?;
        if out.iter().any(|o| o.name == name) || plugin_names.contains(&name) {
            return Err(cx.at(
                &m.name,
                format!("the name {name:?} is used by another [[milter]] or [[plugin]]"),
            ));
        }
        let address = m
            .address
            .get_ref()
            .parse::<MilterAddress>()
            .map_err(|e| cx.at(&m.address, format!("milter {name:?}: address {e}")))?;
        let at = m.name.span().start;
        out.push(MilterSpec {
            name,
            address,
            timeouts: MilterTimeouts {
                connect: cx.positive_duration(
                    &m.connect_timeout,
                    "milter.connect_timeout",
                    d.connect,
                )?,
                command: cx.positive_duration(
                    &m.command_timeout,
                    "milter.command_timeout",
                    d.command,
                )?,
                end_of_message: cx.positive_duration(
                    &m.end_of_message_timeout,
                    "milter.end_of_message_timeout",
                    d.end_of_message,
                )?,
            },
            on_error: match m.on_error {
                OnErrorSetting::Tempfail => OnError::Tempfail,
                OnErrorSetting::Accept => OnError::FailOpen,
                OnErrorSetting::Reject => OnError::FailClosed,
            },
            position: plugin_offsets.iter().filter(|&&o| o < at).count(),
        });
    }
    Ok(out)
}
