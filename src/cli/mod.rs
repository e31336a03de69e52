//! Command-line subcommands of the operator binary.
pub mod keeper;
