//! KSM-compatible test server and end-to-end harness.

pub mod harness;
pub mod ksm_server;
pub mod leak_scan;
pub mod plot;
pub mod rbac_audit;
pub mod world;
