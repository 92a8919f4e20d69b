//! `postern:policy@0.2.0`'s `session` resource: the host's session state lent
//! to a stage call as a handle, each getter answering from it. A plugin pays
//! only for the fields it reads (0.1 copied every field into every call).
//! The handle holds a reference to an immutable snapshot (`Arc`), shared by
//! every plugin of the stage; it is removed from the instance's table after
//! the call. Trusted input (built by the host).

use std::sync::Arc;

use wasmtime::component::Resource;

use crate::bindings::v02::types as wit;
use crate::context::SessionContext;
use crate::hooks::v02::{address, tls_info};
use crate::state::PluginState;

/// The host side of a `session` handle.
pub struct SessionHandle(pub Arc<SessionContext>);

type R<T> = wasmtime::Result<T>;

impl PluginState {
    fn ctx(&self, r: &Resource<SessionHandle>) -> R<&SessionContext> {
        Ok(&self.table.get(r)?.0)
    }
}

impl wit::HostSession for PluginState {
    async fn id(&mut self, this: Resource<SessionHandle>) -> R<String> {
        Ok(self.ctx(&this)?.id.to_string())
    }
    async fn client_ip(&mut self, this: Resource<SessionHandle>) -> R<String> {
        Ok(self.ctx(&this)?.client.ip().to_string())
    }
    async fn client_port(&mut self, this: Resource<SessionHandle>) -> R<u16> {
        Ok(self.ctx(&this)?.client.port())
    }
    async fn client_name(&mut self, this: Resource<SessionHandle>) -> R<Option<String>> {
        Ok(self.ctx(&this)?.client_name.clone())
    }
    async fn local_ip(&mut self, this: Resource<SessionHandle>) -> R<String> {
        Ok(self.ctx(&this)?.local.ip().to_string())
    }
    async fn local_port(&mut self, this: Resource<SessionHandle>) -> R<u16> {
        Ok(self.ctx(&this)?.local.port())
    }
    async fn listener(&mut self, this: Resource<SessionHandle>) -> R<String> {
        Ok(self.ctx(&this)?.listener.to_string())
    }
    async fn server_name(&mut self, this: Resource<SessionHandle>) -> R<String> {
        Ok(self.ctx(&this)?.server_name.to_string())
    }
    async fn helo(&mut self, this: Resource<SessionHandle>) -> R<Option<String>> {
        Ok(self.ctx(&this)?.helo.clone())
    }
    async fn esmtp(&mut self, this: Resource<SessionHandle>) -> R<bool> {
        Ok(self.ctx(&this)?.esmtp)
    }
    async fn tls(&mut self, this: Resource<SessionHandle>) -> R<Option<wit::TlsInfo>> {
        Ok(self.ctx(&this)?.tls.as_ref().map(tls_info))
    }
    async fn auth_user(&mut self, this: Resource<SessionHandle>) -> R<Option<String>> {
        Ok(self.ctx(&this)?.auth_user.clone())
    }
    async fn mail_from(
        &mut self,
        this: Resource<SessionHandle>,
    ) -> R<Option<wit::EnvelopeAddress>> {
        Ok(self.ctx(&this)?.mail_from.as_ref().map(address))
    }
    async fn recipients(&mut self, this: Resource<SessionHandle>) -> R<Vec<wit::EnvelopeAddress>> {
        Ok(self.ctx(&this)?.recipients.iter().map(address).collect())
    }
    async fn recipient_count(&mut self, this: Resource<SessionHandle>) -> R<u32> {
        Ok(self.ctx(&this)?.recipients.len() as u32)
    }
    async fn messages_accepted(&mut self, this: Resource<SessionHandle>) -> R<u32> {
        Ok(self.ctx(&this)?.messages_accepted)
    }
    async fn drop(&mut self, this: Resource<SessionHandle>) -> R<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
