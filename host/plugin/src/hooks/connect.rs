//! Call glue for the `connect-hook` export: session record in, verdict out.

use super::{HookIndices, Live, guest};
use crate::bindings::types as wit;

pub(super) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    session: &wit::Session,
) -> wasmtime::Result<wit::Verdict> {
    let g = guest!(live, idx, connect);
    g.call_on_connect(&mut live.store, session).await
}
