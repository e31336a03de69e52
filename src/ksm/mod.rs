//! Keeper Secrets Manager (KSM) protocol: crypto, configuration, transport and records.
pub mod crypto;
pub mod notation;
pub mod record;
