//! Keeper Secrets Manager (KSM) protocol: crypto, configuration, transport and records.
pub mod client;
pub mod config;
pub mod credential;
pub mod crypto;
pub mod error;
pub(crate) mod hosts;
pub mod record;
pub(crate) mod region;
pub mod response;
pub mod token;
pub mod transport;

pub use client::{ClientOptions, KsmClient, Query};
pub use config::KsmConfig;
pub use error::KsmError;
pub use token::redeem_token;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
