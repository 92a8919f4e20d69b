//! Call glue for the `data-hook` export: the message is placed in the
//! instance's resource table and lent to the plugin as a `borrow<message>`;
//! nothing is copied into the guest unless it reads it. The resource is
//! removed from the table after the call.

use std::sync::Arc;

use super::{HookIndices, Live, guest};
use crate::bindings::types as wit;
use crate::message::{MessageData, MessageHandle};

pub(super) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    session: &wit::Session,
    message: &Arc<MessageData>,
) -> wasmtime::Result<wit::DataResult> {
    let g = guest!(live, idx, data);
    let handle = live
        .store
        .data_mut()
        .table
        .push(MessageHandle(message.clone()))?;
    let borrowed = wasmtime::component::Resource::<MessageHandle>::new_borrow(handle.rep());
    let result = g.call_on_data(&mut live.store, session, borrowed).await;
    live.store.data_mut().table.delete(handle)?;
    result
}
