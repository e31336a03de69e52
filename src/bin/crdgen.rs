//! Prints the CRDs as YAML, or writes them into a directory when one is given:
//! `cargo run --bin crdgen -- crds/`.
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let files = keeper_operator::crd_yaml::all()?;
    match std::env::args_os().nth(1).map(PathBuf::from) {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (name, yaml) in files {
                std::fs::write(dir.join(name), yaml)?;
            }
        }
        None => {
            for (_, yaml) in files {
                print!("---\n{yaml}");
            }
        }
    }
    Ok(())
}
