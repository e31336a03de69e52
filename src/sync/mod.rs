//! The pure core of a sync: no `.await`, no API client. What is due, what the Secret should
//! hold, whether writing it is safe, and what the status says; each decision unit-tested.

pub mod allowlist;
pub mod build;
pub mod decoding;
pub mod desired;
pub mod hold;
pub mod incomplete;
pub mod mapping;
pub mod refresh;
pub mod status;
pub mod store_status;
pub mod template;
pub mod write_guard;
