//! The pure core of a sync: no `.await`, no API client. What is due, what the Secret should
//! hold, whether writing it is safe, and what the status says; each decision unit-tested.

pub mod allowlist;
pub mod build;
pub(crate) mod decoding;
pub mod desired;
pub(crate) mod hold;
pub(crate) mod incomplete;
pub mod mapping;
pub(crate) mod refresh;
pub(crate) mod status;
pub(crate) mod store_status;
pub mod template;
pub(crate) mod write_guard;
