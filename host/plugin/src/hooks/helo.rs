//! Call glue for the `helo-hook` export: session record, HELO/EHLO name and
//! whether it was EHLO in, verdict out.

use super::{HookIndices, Live, guest};
use crate::bindings::types as wit;

pub(super) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    session: &wit::Session,
    name: &str,
    extended: bool,
) -> wasmtime::Result<wit::Verdict> {
    let g = guest!(live, idx, helo);
    g.call_on_helo(&mut live.store, session, name, extended)
        .await
}
