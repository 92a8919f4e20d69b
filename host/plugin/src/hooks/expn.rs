//! Call glue for the `expn-hook` export: session record and argument in, verdict out.

use super::{HookIndices, Live, guest};
use crate::bindings::types as wit;

pub(super) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    session: &wit::Session,
    argument: &str,
) -> wasmtime::Result<wit::Verdict> {
    let g = guest!(live, idx, expn);
    g.call_on_expn(&mut live.store, session, argument).await
}
