//! keeper-operator: syncs Keeper Secrets Manager records into native Kubernetes Secrets.
pub mod crd;
pub mod crd_yaml;
pub mod ksm;
mod ksm_shim;
pub mod desired;
pub mod mapping;
pub mod refresh;
pub mod status;
pub mod template;
