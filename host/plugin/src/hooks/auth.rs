//! Call glue for the `auth-hook` export: session record and decoded SASL
//! credentials in, verdict out. Credentials are never logged here.

use super::{HookIndices, Live, guest};
use crate::bindings::types as wit;

pub(super) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    session: &wit::Session,
    credentials: &wit::Credentials,
) -> wasmtime::Result<wit::Verdict> {
    let g = guest!(live, idx, auth);
    g.call_on_auth(&mut live.store, session, credentials).await
}
