//! `postern:policy/av-scan` (contract 0.2): scan the message a data-stage
//! plugin holds with the host's scanner, only for plugins granted
//! "av-scan", within the deadline of the plugin call making it.

use wasmtime::component::Resource;

use crate::av::{ScanError, ScanResult};
use crate::bindings::v02::postern::policy::av_scan as wit;
use crate::message::MessageHandle;
use crate::state::PluginState;

impl wit::Host for PluginState {
    async fn scan_message(
        &mut self,
        message: Resource<MessageHandle>,
    ) -> wasmtime::Result<Result<wit::ScanResult, wit::ScanError>> {
        let data = self.table.get(&message)?.0.clone();
        if !self.meta.grants.av_scan {
            self.log_denied("virus scan", "av-scan");
            return Ok(Err(wit::ScanError::Denied));
        }
        let backend = self.services.av.clone();
        let budget = super::dns::lookup_budget(
            self.deadline
                .saturating_duration_since(std::time::Instant::now()),
        );
        Ok(
            match tokio::time::timeout(budget, backend.scan(data)).await {
                Ok(Ok(ScanResult::Clean)) => Ok(wit::ScanResult::Clean),
                Ok(Ok(ScanResult::Infected(name))) => Ok(wit::ScanResult::Infected(name)),
                Ok(Err(ScanError::TooLarge)) => Err(wit::ScanError::TooLarge),
                Ok(Err(ScanError::Unavailable(why))) => Err(wit::ScanError::Unavailable(why)),
                Err(_) => Err(wit::ScanError::Unavailable(
                    "the scan did not finish within the plugin's time limit".into(),
                )),
            },
        )
    }
}
