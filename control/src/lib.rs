//! Pilothouse control plane: accounts, organisations, roles, sessions and the
//! audit chain, over one store API that runs on SQLite and PostgreSQL.
//!
//! The plain types in [`types`] compile everywhere (the wasm front end uses
//! them). Everything that touches the database, password hashing or sessions
//! sits behind the `server` feature. No HTTP and no Leptos in this crate: the
//! edges (`app`, `server`) find out who is asking and call in here.

pub mod op_types;
pub mod types;

#[cfg(feature = "server")]
pub mod access;
#[cfg(feature = "server")]
pub mod accounts;
#[cfg(feature = "server")]
pub mod agents;
#[cfg(feature = "server")]
pub mod audit;
#[cfg(feature = "server")]
pub mod audit_export;
#[cfg(feature = "server")]
pub mod audit_search;
#[cfg(feature = "server")]
mod batch;
#[cfg(feature = "server")]
pub mod ca;
#[cfg(feature = "server")]
pub mod checkpoints;
#[cfg(feature = "server")]
pub mod commands;
#[cfg(feature = "server")]
pub mod crypto;
#[cfg(feature = "server")]
pub mod delivery;
#[cfg(feature = "server")]
mod error;
#[cfg(feature = "server")]
pub mod files;
#[cfg(feature = "server")]
pub mod forwarding;
#[cfg(feature = "server")]
pub mod hot_path;
#[cfg(feature = "server")]
pub mod key_vault;
#[cfg(feature = "server")]
pub mod mail;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod mfa;
#[cfg(feature = "server")]
pub mod names;
#[cfg(feature = "server")]
pub mod notices;
#[cfg(feature = "server")]
pub mod notifications;
#[cfg(feature = "server")]
pub mod operations;
#[cfg(feature = "server")]
pub mod password;
#[cfg(feature = "server")]
pub mod password_reset;
#[cfg(feature = "server")]
pub mod secrets;
#[cfg(feature = "server")]
pub mod server_keys;
#[cfg(feature = "server")]
pub mod sessions;
#[cfg(feature = "server")]
pub mod sso;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod team;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "server")]
pub mod throttle;

/// The order of agent versions (the servers list sorts by it).
pub use channel::version::compare_versions;
#[cfg(feature = "server")]
pub use error::{ControlError, StoreError};
pub use op_types::*;
pub use types::*;
