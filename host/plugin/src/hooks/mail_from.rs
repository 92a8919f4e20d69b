//! Call glue for the `mail-from-hook` export: session record and sender in, verdict out.

use super::{HookIndices, Live, guest};
use crate::bindings::types as wit;

pub(super) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    session: &wit::Session,
    sender: &wit::EnvelopeAddress,
) -> wasmtime::Result<wit::Verdict> {
    let g = guest!(live, idx, mail_from);
    g.call_on_mail_from(&mut live.store, session, sender).await
}
