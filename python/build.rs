//! Builds the `filebus` command for the wheel. pip installs one wheel, and
//! maturin builds only this crate's library, the module; the wheel carries
//! the real binary beside it as a script through its data directory
//! (`python/wheel/scripts/filebus`, a committed link to the file built
//! here), so that `pip install .` gives both. Only with the `bundle-cli`
//! feature, which pyproject.toml turns on for maturin: lints and tests of
//! this crate do not build a release binary.

use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_BUNDLE_CLI").is_none() {
        return;
    }
    // The link in python/wheel/scripts/ names the host's build; a binary
    // for another target would need another link (and a linker for it).
    let (target, host) = (env::var("TARGET"), env::var("HOST"));
    assert!(
        target == host,
        "the wheel bundles the filebus command only when built for the host ({host:?}), not {target:?}"
    );
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("python/ lies in the repository")
        .to_path_buf();
    for input in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo::rerun-if-changed={}", root.join(input).display());
    }
    // A target directory of its own: the build running this script holds
    // the lock of its own, and a nested cargo waiting for it would wait for
    // ever. The link in python/wheel/scripts/ points into it.
    let target_dir = root.join("target").join("bundled-cli");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--bin", "filebus"])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // As pyproject.toml has it for the module: the wheel needs no symbols.
        .args(["--config", "profile.release.strip=true"])
        // A build script's standard output is read by cargo as directives.
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .expect("cannot run cargo to build the filebus command");
    assert!(
        status.success(),
        "building the filebus command for the wheel failed: {status}"
    );
}
