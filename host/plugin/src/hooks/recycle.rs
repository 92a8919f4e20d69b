//! Call glue for the optional `recycle` export: asked before an instance that
//! served one session serves the next; `true` lets it, anything else (no
//! export, `false`, a trap) has it replaced by a fresh instance.

use super::{HookIndices, Live};

pub(super) async fn call(live: &mut Live, idx: &HookIndices) -> wasmtime::Result<bool> {
    let Some(indices) = &idx.recycle else {
        return Ok(false);
    };
    let g = indices.load(&mut live.store, &live.instance)?;
    g.call_recycle(&mut live.store).await
}
