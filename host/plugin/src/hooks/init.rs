//! Call glue for the `init` export: the plugin's configuration (JSON) in,
//! acceptance or a refusal message out. Plugins without `init` accept.

use super::{HookIndices, Live};

pub(super) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    config: &str,
) -> wasmtime::Result<Result<(), String>> {
    let Some(indices) = &idx.init else {
        return Ok(Ok(()));
    };
    let g = indices.load(&mut live.store, &live.instance)?;
    g.call_init(&mut live.store, config).await
}
