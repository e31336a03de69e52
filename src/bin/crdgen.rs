//! Generates the CRDs from the Rust types into `crds/` and the chart's copy
//! (`helm/keeper-operator/files/crds/`):
//!
//! ```text
//! cargo run --bin crdgen              # write both
//! cargo run --bin crdgen -- --check   # fail, naming the files, if either has drifted
//! cargo run --bin crdgen -- --stdout  # print them as one YAML stream
//! ```
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use keeper_operator::api::yaml;

/// Generates the operator's CustomResourceDefinitions.
#[derive(Parser)]
struct Args {
    /// Only check that the committed files match; write nothing.
    #[arg(long, conflicts_with = "stdout")]
    check: bool,
    /// Print the CRDs instead of writing them.
    #[arg(long)]
    stdout: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // The repository this binary was built from.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if args.stdout {
        for (_, yaml) in yaml::all()? {
            print!("---\n{yaml}");
        }
    } else if args.check {
        let problems = yaml::drift(root)?;
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("crdgen: {p}");
            }
            eprintln!("crdgen: run `cargo run --bin crdgen` and commit the result");
            return Ok(ExitCode::FAILURE);
        }
        println!("crdgen: {} match the Rust types", yaml::DIRS.join(" and "));
    } else {
        yaml::write(root)?;
    }
    Ok(ExitCode::SUCCESS)
}
