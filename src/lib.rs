//! keeper-operator: syncs Keeper Secrets Manager records into native Kubernetes Secrets.
pub mod cli;
pub mod fetcher;
pub mod ksm;
