//! Call glue for the `rcpt-to-hook` export: session record and recipient in, verdict out.

use super::{HookIndices, Live, guest};
use crate::bindings::types as wit;

pub(super) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    session: &wit::Session,
    recipient: &wit::EnvelopeAddress,
) -> wasmtime::Result<wit::Verdict> {
    let g = guest!(live, idx, rcpt_to);
    g.call_on_rcpt_to(&mut live.store, session, recipient).await
}
