//! Paths and process helpers shared by the tasks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The workspace root (two levels above this crate).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `dist/` under the workspace root.
pub fn dist_dir() -> PathBuf {
    root().join("dist")
}

/// What `cargo metadata` says about the workspace.
pub struct Metadata {
    /// tikban's version.
    pub version: String,
    /// The target directory, honouring `CARGO_TARGET_DIR`.
    pub target_dir: PathBuf,
}

/// Reads tikban's version and the target directory from `cargo metadata`.
pub fn metadata() -> Result<Metadata> {
    let out = output(
        cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(root()),
    )?;
    let meta: Value = serde_json::from_slice(&out.stdout).context("parse cargo metadata")?;
    let version = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "tikban"))
        .and_then(|p| p["version"].as_str())
        .context("cargo metadata lists no tikban package")?
        .to_owned();
    let target_dir = meta["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?
        .into();
    Ok(Metadata {
        version,
        target_dir,
    })
}

/// A `cargo` command without the variables `cargo run` set for xtask itself, so that a nested
/// `cargo +nightly` really runs nightly.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.env_remove("CARGO").env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// Runs `cmd` with inherited output; fails unless it exits 0.
pub fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !st.success() {
        bail!("{} failed: {st}", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` capturing its output; fails (showing stderr) unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\n{}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Runs `binary --version`, natively or under `qemu`, and checks it prints `tikban <version>`.
pub fn check_version(binary: &Path, qemu: Option<&str>, version: &str) -> Result<()> {
    let mut cmd = match qemu {
        Some(q) => {
            let mut c = Command::new(q);
            c.arg(binary);
            c
        }
        None => Command::new(binary),
    };
    cmd.arg("--version").env_clear();
    let out = output(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("tikban {version}");
    if text.trim() != want {
        bail!(
            "{} --version printed {text:?}, expected {want:?}",
            binary.display()
        );
    }
    Ok(())
}

/// `program arg…` for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bytes as MiB with two decimals.
pub fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}
