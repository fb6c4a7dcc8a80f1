//! `cargo xtask dist`: static binaries and RouterOS image tars.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::image::{self, Image};
use crate::oci;
use crate::targets::Target;
use crate::tools;
use crate::util::{self, Metadata};

/// Size budget of one stripped binary (issue 6).
pub const BINARY_BUDGET: u64 = 3 * 1024 * 1024;
/// Size budget of one image tar (issue 6).
pub const TAR_BUDGET: u64 = 3 * 1024 * 1024 + 512 * 1024;

/// What one target produced.
struct Built {
    target: &'static Target,
    binary: PathBuf,
    bytes: Vec<u8>,
    binary_size: u64,
    tar: PathBuf,
    tar_size: u64,
    seconds: u64,
}

/// The PyPI tools `dist` needs, with their keys in `scripts/dist-tools.env`.
const PIP_TOOLS: &[(&str, &str)] = &[("ziglang", "ZIGLANG"), ("cargo-zigbuild", "CARGO_ZIGBUILD")];

/// `cargo xtask dist --install-tools`: installs what building `targets` needs (pinned versions
/// from `scripts/dist-tools.env`), then checks again. Builds nothing.
pub fn install_tools(targets: &[&'static Target], rerun: &str) -> Result<()> {
    let missing = tools::missing_for_dist(targets)?;
    tools::install(
        "dist",
        PIP_TOOLS,
        &missing,
        || tools::missing_for_dist(targets),
        rerun,
    )
}

/// Builds, checks and packages every target, then prints the size table. Fails if any check or
/// budget fails; the table is printed first so the numbers are visible either way.
///
/// Before building anything it checks the tools and, if some are missing, fails with the
/// command that installs each (`rerun` installs them all).
pub fn run(targets: &[&'static Target], rerun: &str) -> Result<()> {
    tools::require("dist", &tools::missing_for_dist(targets)?, rerun)?;
    let meta = util::metadata()?;
    let dist = util::dist_dir();
    std::fs::create_dir_all(&dist).with_context(|| format!("create {}", dist.display()))?;
    let mut built = Vec::new();
    for target in targets {
        built.push(one(target, &meta, &dist)?);
    }
    let images: Vec<Image<'_>> = built
        .iter()
        .map(|b| Image {
            binary: &b.bytes,
            platform: b.target.platform,
            version: &meta.version,
        })
        .collect();
    let layout = oci::layout(&images, &meta.version).context("OCI image layout")?;
    let oci_dir = dist.join("oci");
    oci::write(&oci_dir, &layout)?;
    println!();
    println!(
        "{:<32} {:>10} {:>10} {:>6}  artefact",
        "target", "binary", "tar", "build"
    );
    let mut over = Vec::new();
    for b in &built {
        println!(
            "{:<32} {:>10} {:>10} {:>5}s  {}",
            b.target.triple,
            util::mib(b.binary_size),
            util::mib(b.tar_size),
            b.seconds,
            relative(&b.tar)
        );
        if b.binary_size > BINARY_BUDGET {
            over.push(format!(
                "{}: {} > {}",
                relative(&b.binary),
                util::mib(b.binary_size),
                util::mib(BINARY_BUDGET)
            ));
        }
        if b.tar_size > TAR_BUDGET {
            over.push(format!(
                "{}: {} > {}",
                relative(&b.tar),
                util::mib(b.tar_size),
                util::mib(TAR_BUDGET)
            ));
        }
    }
    println!(
        "budgets: binary ≤ {}, tar ≤ {}",
        util::mib(BINARY_BUDGET),
        util::mib(TAR_BUDGET)
    );
    let platforms: Vec<String> = built
        .iter()
        .map(|b| b.target.platform.to_string())
        .collect();
    println!(
        "registry image: oci:{}:{} ({}), index {}",
        relative(&oci_dir),
        meta.version,
        platforms.join(", "),
        layout.index_digest
    );
    if !over.is_empty() {
        bail!(
            "over the size budget (find what is large with `cargo bloat`):\n  {}",
            over.join("\n  ")
        );
    }
    Ok(())
}

fn one(target: &'static Target, meta: &Metadata, dist: &Path) -> Result<Built> {
    let started = Instant::now();
    eprintln!("=== {}: cargo zigbuild", target.triple);
    util::status(&mut build_command(target))?;
    let seconds = started.elapsed().as_secs();

    let out = meta
        .target_dir
        .join(target.triple)
        .join("release")
        .join("tikban");
    let name = format!("tikban-{}-{}", meta.version, target.suffix);
    let binary = dist.join(&name);
    std::fs::copy(&out, &binary)
        .with_context(|| format!("copy {} to {}", out.display(), binary.display()))?;
    let bytes = std::fs::read(&binary).with_context(|| format!("read {}", binary.display()))?;

    check_static(&binary)?;
    util::check_version(&binary, target.qemu, &meta.version)?;
    eprintln!(
        "{}: static, --version ok ({})",
        relative(&binary),
        target.qemu.unwrap_or("native")
    );

    let tar_bytes = image::docker_archive(&Image {
        binary: &bytes,
        platform: target.platform,
        version: &meta.version,
    })?;
    // The same binary under the buildx platform name, for `containerfile` with `dist/` as the
    // build context: `linux-<TARGETARCH><TARGETVARIANT>/tikban`.
    let platform_dir = dist.join(format!(
        "linux-{}{}",
        target.platform.architecture,
        target.platform.variant.unwrap_or("")
    ));
    std::fs::create_dir_all(&platform_dir)
        .with_context(|| format!("create {}", platform_dir.display()))?;
    std::fs::write(platform_dir.join("tikban"), &bytes)
        .with_context(|| format!("write {}/tikban", platform_dir.display()))?;
    set_executable(&platform_dir.join("tikban"))?;

    let tar = dist.join(format!("{name}.tar"));
    std::fs::write(&tar, &tar_bytes).with_context(|| format!("write {}", tar.display()))?;
    Ok(Built {
        target,
        binary,
        binary_size: bytes.len() as u64,
        bytes,
        tar,
        tar_size: tar_bytes.len() as u64,
        seconds,
    })
}

/// `cargo [+nightly] zigbuild --release -p tikban --bin tikban --target T`, with build-std for
/// the targets the CI machines' toolchain mirror has no musl std for (`docs/reference/build-env.md`, "Rust targets"): build-std has no
/// self-contained crt objects, so `link-self-contained=no` lets zig supply crt and musl.
pub(crate) fn build_command(target: &Target) -> Command {
    let mut cmd = util::cargo();
    if target.build_std {
        cmd.arg("+nightly");
    }
    cmd.args(["zigbuild", "--release", "-p", "tikban", "--bin", "tikban"])
        .args(["--target", target.triple])
        .current_dir(util::root());
    if target.build_std {
        cmd.arg("-Zbuild-std=std,panic_abort")
            .env("RUSTFLAGS", "-C link-self-contained=no");
    }
    cmd
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}

/// A static binary has no `PT_INTERP` program header and no `DT_NEEDED` entries.
fn check_static(binary: &Path) -> Result<()> {
    let headers = util::output(Command::new("readelf").arg("-lW").arg(binary))?;
    let headers = String::from_utf8_lossy(&headers.stdout);
    if headers.contains("INTERP") {
        bail!("{} has a program interpreter:\n{headers}", binary.display());
    }
    let dynamic = util::output(Command::new("readelf").arg("-dW").arg(binary))?;
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    if dynamic.contains("(NEEDED)") {
        bail!("{} needs shared libraries:\n{dynamic}", binary.display());
    }
    Ok(())
}

/// `path` relative to the workspace root, for tidy output.
fn relative(path: &Path) -> String {
    let root = util::root();
    let root = root.canonicalize().unwrap_or(root);
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    path.strip_prefix(&root)
        .unwrap_or(&path)
        .display()
        .to_string()
}
