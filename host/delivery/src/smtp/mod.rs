//! The outbound SMTP client (RFC 5321 client side, with RFC 2920 PIPELINING, RFC 1870
//! SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3207 STARTTLS, RFC 4954 AUTH and
//! RFC 3461 DSN parameter pass-through). Pure parts — capability parsing, command
//! building, dot-stuffing — are separate from the I/O (`io`) and the dialogue that
//! drives it (`client`). Every remote byte is hostile: lines are bounded, every read
//! and write has a time-out (RFC 5321 §4.5.3.2), and only CRLF is ever sent.
//! What a server gets of the message is decided per server by `content`: as
//! spooled, or converted to 7 bit (`crate::downgrade`) for one without 8BITMIME.

pub mod client;
pub mod content;
pub mod dialogue;
pub mod ehlo;
pub mod io;
pub mod stuff;

pub use client::{ClientCtx, Outgoing, Report, Session, Stale, TlsPlan};
pub use ehlo::Capabilities;
