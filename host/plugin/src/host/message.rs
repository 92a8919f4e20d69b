//! `postern:policy/message`: the message resource lent to data-stage plugins.
//! Plugins get look-ups and bounded reads; the host never copies the whole
//! message into a plugin unless it reads it all (a large message is read from
//! its spill file with positioned reads).

use wasmtime::component::Resource;

use crate::message::MessageHandle;
use crate::state::PluginState;

type R<T> = wasmtime::Result<T>;

impl PluginState {
    fn msg(&self, r: &Resource<MessageHandle>) -> R<&MessageHandle> {
        Ok(self.table.get(r)?)
    }
}

/// The `message` interface of one contract version (the same in both).
macro_rules! message_host {
    ($v:ident) => {
        const _: () = {
            use crate::bindings::$v::postern::policy::message::{Host, HostMessage};
            use crate::bindings::$v::postern::policy::types::Header;

            impl HostMessage for PluginState {
                async fn size(&mut self, this: Resource<MessageHandle>) -> R<u64> {
                    Ok(self.msg(&this)?.0.size())
                }

                async fn header(
                    &mut self,
                    this: Resource<MessageHandle>,
                    name: String,
                ) -> R<Option<String>> {
                    Ok(self.msg(&this)?.0.header(&name).map(str::to_string))
                }

                async fn header_all(
                    &mut self,
                    this: Resource<MessageHandle>,
                    name: String,
                ) -> R<Vec<String>> {
                    Ok(self.msg(&this)?.0.header_all(&name))
                }

                async fn headers(&mut self, this: Resource<MessageHandle>) -> R<Vec<Header>> {
                    Ok(self
                        .msg(&this)?
                        .0
                        .headers()
                        .iter()
                        .map(|(name, value)| Header {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect())
                }

                async fn body_size(&mut self, this: Resource<MessageHandle>) -> R<u64> {
                    Ok(self.msg(&this)?.0.body_size())
                }

                async fn read_body(
                    &mut self,
                    this: Resource<MessageHandle>,
                    offset: u64,
                    len: u32,
                ) -> R<Vec<u8>> {
                    self.msg(&this)?
                        .0
                        .read_body(offset, len)
                        .map_err(unreadable)
                }

                async fn read(
                    &mut self,
                    this: Resource<MessageHandle>,
                    offset: u64,
                    len: u32,
                ) -> R<Vec<u8>> {
                    self.msg(&this)?.0.read(offset, len).map_err(unreadable)
                }

                async fn drop(&mut self, this: Resource<MessageHandle>) -> R<()> {
                    self.table.delete(this)?;
                    Ok(())
                }
            }

            impl Host for PluginState {}
        };
    };
}

message_host!(v01);
message_host!(v02);

/// The file behind a large message could not be read: the call fails (the
/// plugin's `on_error` decides), as short data could pass what the plugin would
/// have refused.
fn unreadable(e: std::io::Error) -> wasmtime::Error {
    wasmtime::Error::msg(format!("cannot read the message: {e}"))
}
