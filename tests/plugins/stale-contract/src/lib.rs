//! A component that names `postern:policy@0.2.0` but was built from a stale
//! copy of the WIT: its `reply` record lacks `enhanced`. Everything else it
//! uses matches, so it links; only a structural check of its `vrfy-hook`
//! export finds the difference. The host must refuse it at load (`postern
//! check`, start, reload) with the interface and the difference, instead of
//! answering 451 at every call (tests/e2e/test_plugin_chain.py).

wit_bindgen::generate!({
    inline: r#"
        package postern:policy@0.2.0;

        interface types {
            resource session {
                id: func() -> string;
            }
            record reply {
                code: u16,
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

        interface vrfy-hook {
            use types.{session, verdict};
            on-vrfy: func(session: borrow<session>, argument: string) -> verdict;
        }

        world stale {
            export vrfy-hook;
        }
    "#,
});

use exports::postern::policy::vrfy_hook::Guest;
use postern::policy::types::{Reply, Session, Verdict};

struct Stale;

impl Guest for Stale {
    fn on_vrfy(_session: &Session, _argument: String) -> Verdict {
        Verdict::Reject(Reply {
            code: 550,
            text: "stale".into(),
        })
    }
}

export!(Stale);
