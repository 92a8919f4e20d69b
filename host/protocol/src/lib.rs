//! Postern's SMTP protocol library: pure, I/O-free conversion between bytes and
//! typed SMTP values (commands, replies, addresses, parameters, DATA content).
//! Trusts no input: everything parsed here is hostile network data, and no input
//! can make it panic. Implements RFC 5321 (with RFC 1870, 2034, 3207, 3461, 3463,
//! 4954, 6152 and 6531 extensions); see each module for its sections.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod address;
pub mod auth_results;
pub mod command;
pub mod data;
pub mod date;
pub mod line;
pub mod params;
pub mod reply;

pub use address::{
    AddressError, Domain, ForwardPath, MAX_DOMAIN, MAX_LABEL, MAX_LOCAL_PART, MAX_PATH, Mailbox,
    ReversePath,
};
pub use command::{Command, CommandError, parse_command};
pub use data::{DataOutcome, DataProgress, DataReader, MAX_TEXT_LINE};
pub use line::{
    LineError, LineEvent, LineFramer, MAX_AUTH_LINE, MAX_COMMAND_LINE, is_auth_command,
};
pub use params::{BodyType, EsmtpParam, MailParams, ParamError, RcptParams, parse_params};
pub use reply::{
    EnhancedCode, EnhancedCodeError, MAX_REPLY_LINES, MAX_REPLY_TEXT, Reply, ReplyParseError,
    ReplyParser,
};
