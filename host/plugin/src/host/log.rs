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

fn render(fields: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in fields.iter().take(MAX_FIELDS) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(cap(k, 64));
        out.push('=');
        let v = cap(v, 512);
        if v.contains([' ', '"', '=']) || v.is_empty() {
            out.push_str(&format!("{v:?}"));
        } else {
            out.push_str(v);
        }
    }
    out
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
                                            let fields = render(&fields);
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
        assert_eq!(render(&f), "a=1 b=\"two words\" c=\"\"");
        assert_eq!(cap("héllo", 2), "h");
    }
}
