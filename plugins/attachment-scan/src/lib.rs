//! attachment-scan: refuses (or tags) messages carrying attachments with
//! blocked extensions or types, zip archives holding such files, or the
//! EICAR test signature, after real MIME decoding (RFC 2045-2049, RFC 2183,
//! RFC 2231). Trusts the host's message handle; the message is hostile.

use postern_sdk::prelude::*;

pub mod config;
pub mod data;
pub mod eicar;
pub mod names;
pub mod neutral;
pub mod scan;
pub mod zip;

use config::{Config, Settings};

/// The plugin: validated settings only (nothing of a session), so its
/// instances are recycled from one session to the next.
pub struct AttachmentScan(Settings);

impl Plugin for AttachmentScan {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        config.validate().map(AttachmentScan)
    }
}

/// The host's message resource and log.
struct HostMessage<'m>(&'m Message);

impl data::Source for HostMessage<'_> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read(&self, offset: u64, len: u32) -> Vec<u8> {
        self.0.read(offset, len)
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        log::with(level, message, fields);
    }
}

impl Data for AttachmentScan {
    fn on_data(&self, _session: &Session, message: &Message) -> DataResult {
        data::on_data(&self.0, &HostMessage(message))
    }
}

export_plugin!(AttachmentScan, [data], recycle);
