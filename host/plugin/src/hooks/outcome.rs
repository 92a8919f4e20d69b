//! Call glue for the `outcome-hook` export: session record and a stage's
//! decided outcome in, nothing out.

use super::{HookIndices, Live, guest};
use crate::bindings::types as wit;

pub(super) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    session: &wit::Session,
    outcome: &wit::Outcome,
) -> wasmtime::Result<()> {
    let g = guest!(live, idx, outcome);
    g.call_on_outcome(&mut live.store, session, outcome).await
}
