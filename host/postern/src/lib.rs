//! Postern: the host MTA. Two parts over the shared configuration:
//!
//! - [`server`]: the running daemon — listeners, SMTP sessions, reload and
//!   rollout, the admin socket's server side, metrics, and the host services
//!   plugins call (DNS, kv, mail authentication, AV) — over the pure
//!   `postern-protocol`, the `postern-plugin` runtime, the spool and the
//!   delivery manager;
//! - [`cli`]: the `postern` command line — it starts the server, asks it
//!   over the admin socket and prints the answers, and runs the offline
//!   tools (`check`, `queue` without a server, `replay`, `plugin new`, `spf`,
//!   `dkim keygen`).
//!
//! [`config`] is what both read: the operator's file, parsed per section
//! and checked before anything starts.

pub mod cli;
pub mod config;
pub mod server;
