//! Call glue for the `vrfy-hook` export: session record and argument in, verdict out.

use super::{HookIndices, Live, guest};
use crate::bindings::types as wit;

pub(super) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    session: &wit::Session,
    argument: &str,
) -> wasmtime::Result<wit::Verdict> {
    let g = guest!(live, idx, vrfy);
    g.call_on_vrfy(&mut live.store, session, argument).await
}
