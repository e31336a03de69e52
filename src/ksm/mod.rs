//! Keeper Secrets Manager (KSM) protocol: crypto, configuration, transport and records.
pub mod crypto;
