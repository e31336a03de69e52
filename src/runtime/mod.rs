//! Process plumbing of `keeper-operator run`: starting everything and shutting it down, the HTTP
//! endpoints (health, readiness, metrics and their authorization), telemetry, and leader
//! election.

pub mod http;
pub mod leader;
pub mod metrics;
pub mod metrics_auth;
pub mod run;
pub mod telemetry;
