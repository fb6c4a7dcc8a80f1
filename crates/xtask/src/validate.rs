//! `cargo xtask validate-image`: check a tar with tools that are not ours.
//!
//! A tar that only our own reader accepts proves little, so this asks skopeo (containers/image,
//! the same library podman uses) and umoci (the OCI reference unpacker), as `docs/reference/build-env.md`
//! ("Images without a container engine") suggests.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{targets, util};

/// Validates one `dist/tikban-<version>-<arch>.tar`.
pub fn image(tar: &Path) -> Result<()> {
    let file_name = tar
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", tar.display()))?;
    let target = targets::for_artefact(file_name)
        .with_context(|| format!("{file_name}: no known architecture suffix"))?;
    let version = util::metadata()?.version;
    let reference = format!("docker-archive:{}", tar.display());
    let want = target.platform;

    // 1. skopeo inspect: the summary and the raw config.
    let summary = json(Command::new("skopeo").args(["inspect", &reference]))?;
    ensure!(
        summary["Architecture"] == want.architecture && summary["Os"] == "linux",
        "skopeo inspect {file_name}: Architecture {} Os {}, expected {} linux",
        summary["Architecture"],
        summary["Os"],
        want.architecture
    );
    let config = json(Command::new("skopeo").args(["inspect", "--config", &reference]))?;
    ensure!(
        config["architecture"] == want.architecture
            && config["os"] == "linux"
            && config["variant"].as_str() == want.variant,
        "skopeo inspect --config {file_name}: architecture {} os {} variant {}, expected {} linux {:?}",
        config["architecture"],
        config["os"],
        config["variant"],
        want.architecture,
        want.variant
    );
    ensure!(
        config["config"]["Entrypoint"] == serde_json::json!(["/tikban"]),
        "{file_name}: entrypoint is {}",
        config["config"]["Entrypoint"]
    );
    ensure!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len) == Some(1),
        "{file_name}: expected exactly one layer"
    );

    // 2. skopeo copy to an OCI layout, umoci unpack, run the binary from the rootfs.
    let work = tempfile::tempdir().context("temporary directory")?;
    let oci = format!("oci:{}:tikban", work.path().join("oci").display());
    util::output(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--quiet",
        &reference,
        &oci,
    ]))?;
    let bundle = work.path().join("bundle");
    util::output(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(oci.trim_start_matches("oci:"))
            .arg(&bundle),
    )?;
    let rootfs = bundle.join("rootfs");
    let mut entries: Vec<String> = std::fs::read_dir(&rootfs)
        .with_context(|| format!("read {}", rootfs.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    if entries != ["tikban"] {
        bail!("{file_name}: rootfs holds {entries:?}, expected only tikban");
    }
    util::check_version(&rootfs.join("tikban"), target.qemu, &version)?;
    println!(
        "{file_name}: skopeo sees linux/{}{}, umoci rootfs /tikban --version ok ({})",
        want.architecture,
        want.variant.map(|v| format!("/{v}")).unwrap_or_default(),
        target.qemu.unwrap_or("native")
    );
    Ok(())
}

fn json(cmd: &mut Command) -> Result<Value> {
    let out = util::output(cmd)?;
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parse output of {}", util::describe(cmd)))
}
