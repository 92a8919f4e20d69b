//! A component that names `postern:policy@0.2.0` but was built from a stale
//! copy of the WIT on the import side: its `kv.get` returns a bare
//! `option<string>` instead of `result<option<string>, kv-error>`. Its export
//! matches the contract; the host's linker finds the difference in the
//! import, and the host must refuse the component at load (`postern check`,
//! start, reload) naming the interface and function, instead of trapping at
//! the first call (tests/e2e/test_plugin_chain.py).

wit_bindgen::generate!({
    inline: r#"
        package postern:policy@0.2.0;

        interface types {
            resource session {
                id: func() -> string;
            }
            record reply {
                code: u16,
                enhanced: option<string>,
                text: string,
            }
            variant verdict {
                pass,
                accept,
                accept-with(reply),
                reject(reply),
                defer(reply),
                disconnect(reply),
            }
        }

        interface kv {
            get: func(key: string) -> option<string>;
        }

        interface vrfy-hook {
            use types.{session, verdict};
            on-vrfy: func(session: borrow<session>, argument: string) -> verdict;
        }

        world stale-import {
            import kv;
            export vrfy-hook;
        }
    "#,
});

use exports::postern::policy::vrfy_hook::Guest;
use postern::policy::types::{Reply, Session, Verdict};

struct Stale;

impl Guest for Stale {
    fn on_vrfy(_session: &Session, argument: String) -> Verdict {
        let known = postern::policy::kv::get(&argument).is_some();
        Verdict::AcceptWith(Reply {
            code: 250,
            enhanced: None,
            text: format!("known: {known}"),
        })
    }
}

export!(Stale);
