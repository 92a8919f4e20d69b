//! `postern:policy/log`: structured plugin logging, tagged with plugin name
//! and session id. Messages and fields are capped in size.

use crate::state::PluginState;

const MAX_MESSAGE: usize = 4096;
const MAX_FIELDS: usize = 32;

fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A plugin's fields as `k=v k2="quoted value"`, written straight into the
/// log record (no string of their own): the first `MAX_FIELDS`, keys cut at
/// 64 bytes and values at 512; a value that is empty or holds a space, a
/// quote or `=` is quoted and escaped.
struct Rendered<'a>(&'a [(String, String)]);

impl std::fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().take(MAX_FIELDS).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(cap(k, 64))?;
            f.write_str("=")?;
            let v = cap(v, 512);
            if v.contains([' ', '"', '=']) || v.is_empty() {
                write!(f, "{v:?}")?;
            } else {
                f.write_str(v)?;
            }
        }
        Ok(())
    }
}

/// The `log` interface of one contract version (the same in both).
macro_rules! log_host {
    ($v:ident) => {
        const _: () = {
            use crate::bindings::$v::postern::policy::log::{Host, Level};

            impl Host for PluginState {
                async fn log(
                    &mut self,
                    level: Level,
                    message: String,
                    fields: Vec<(String, String)>,
                ) -> wasmtime::Result<()> {
                    let plugin = &*self.meta.name;
                    let session = &*self.session_id;
                    let message = cap(&message, MAX_MESSAGE);
                    // Fields are rendered only for a record that will be written.
                    macro_rules! emit {
                                    ($lvl:expr) => {
                                        if tracing::enabled!(target: "postern::plugin", $lvl) {
                                            let fields = Rendered(&fields);
                                            tracing::event!(
                                                target: "postern::plugin",
                                                $lvl,
                                                plugin = %plugin,
                                                session = %session,
                                                fields = %fields,
                                                "{message}"
                                            )
                                        }
                                    };
                                }
                    match level {
                        Level::Trace => emit!(tracing::Level::TRACE),
                        Level::Debug => emit!(tracing::Level::DEBUG),
                        Level::Info => emit!(tracing::Level::INFO),
                        Level::Warn => emit!(tracing::Level::WARN),
                        Level::Error => emit!(tracing::Level::ERROR),
                    }
                    Ok(())
                }
            }
        };
    };
}

log_host!(v01);
log_host!(v02);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields() {
        let f = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "two words".to_string()),
            ("c".to_string(), String::new()),
        ];
        assert_eq!(Rendered(&f).to_string(), "a=1 b=\"two words\" c=\"\"");
        assert_eq!(cap("héllo", 2), "h");
    }
}
