//! `cargo xtask registry-check`: the registry image as a router sees it.
//!
//! Starts a real registry on loopback (Debian's `docker-registry`, distribution 2.8), pushes
//! `dist/oci` with `skopeo copy --all --preserve-digests` (as `docs/packaging.md` tells users
//! to), and then, like RouterOS with `remote-image=`, pulls one platform at a time
//! (`skopeo --override-arch/--override-variant`), unpacks it with `umoci` and runs its
//! `/tikban --version` (under qemu-user for foreign architectures). It checks that the registry
//! serves the index byte for byte as `cargo xtask dist` wrote it, that the index lists exactly
//! the platforms asked for, and that each pull gets that platform's manifest and binary.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::image::{self, Platform};
use crate::oci;
use crate::procs::{self, Reaper};
use crate::targets::Target;
use crate::{tools, util};

/// How long the registry may take to answer `/v2/`.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// `cargo xtask registry-check --install-tools`.
pub fn install_tools(targets: &[&'static Target], rerun: &str) -> Result<()> {
    let missing = tools::missing_for_registry(targets);
    tools::install(
        "registry-check",
        &[],
        &missing,
        || Ok(tools::missing_for_registry(targets)),
        rerun,
    )
}

/// Pushes `dist/oci` to a loopback registry and pulls back each of `targets`.
pub fn run(targets: &[&'static Target], rerun: &str) -> Result<()> {
    tools::require(
        "registry-check",
        &tools::missing_for_registry(targets),
        rerun,
    )?;
    let meta = util::metadata()?;
    let version = &meta.version;
    let dist = util::dist_dir();
    let layout = dist.join("oci");
    let dist_args =
        rerun
            .trim_end_matches(" --install-tools")
            .replacen("registry-check", "dist", 1);

    // What `cargo xtask dist` wrote.
    let top = read_json(&layout.join("index.json"))
        .with_context(|| format!("no OCI layout in dist/: run `{dist_args}` first"))?;
    let entry = top["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|e| e["annotations"][oci::REF_NAME] == **version)
        })
        .with_context(|| format!("dist/oci has no image tagged {version}: run `{dist_args}`"))?;
    let index_digest = entry["digest"].as_str().context("index digest")?.to_owned();
    let local_index = std::fs::read(blob_path(&layout, &index_digest)?)
        .with_context(|| format!("read blob {index_digest}"))?;
    let want: Vec<Platform> = targets.iter().map(|t| t.platform).collect();
    let listed = platforms(&serde_json::from_slice(&local_index).context("parse the index")?)?;
    ensure!(
        listed == names(&want),
        "dist/oci lists {listed:?}, expected {:?}: run `{dist_args}` first",
        names(&want)
    );

    let work = tempfile::tempdir().context("temporary directory")?;
    let registry = Registry::start(work.path())?;
    let reference = format!("docker://127.0.0.1:{}/tikban:{version}", registry.port);
    eprintln!("registry-check: registry on 127.0.0.1:{}", registry.port);

    // 1. Push the index and everything under it, unchanged.
    let source = format!("oci:{}:{version}", layout.display());
    util::output(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &source,
        &reference,
    ]))?;

    // 2. The registry serves the very same index.
    let raw = util::output(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &reference,
    ]))?
    .stdout;
    ensure!(
        format!("sha256:{}", image::sha256_hex(&raw)) == index_digest,
        "the registry serves an index that differs from dist/oci ({} bytes, {} expected)",
        raw.len(),
        local_index.len()
    );
    let index: Value = serde_json::from_slice(&raw).context("parse the pushed index")?;
    ensure!(
        index["mediaType"] == oci::INDEX,
        "pushed manifest is {}, not an image index",
        index["mediaType"]
    );
    let pushed = platforms(&index)?;
    ensure!(
        pushed == names(&want),
        "pushed index lists {pushed:?}, expected {:?}",
        names(&want)
    );
    println!(
        "{reference}: image index {index_digest} lists {}",
        pushed.join(", ")
    );

    // 3. Pull each platform the way a router of that architecture does, unpack, run.
    for target in targets {
        pull_and_run(target, &index, &reference, work.path(), &dist, version)?;
    }
    drop(registry);
    Ok(())
}

fn pull_and_run(
    target: &Target,
    index: &Value,
    reference: &str,
    work: &Path,
    dist: &Path,
    version: &str,
) -> Result<()> {
    let p = target.platform;
    let dir = work.join(format!("pull-{}", target.suffix));
    let dest = format!("{}:{version}", dir.display());
    let mut copy = Command::new("skopeo");
    copy.args(["--insecure-policy", "--override-os", "linux"])
        .args(["--override-arch", p.architecture]);
    if let Some(v) = p.variant {
        copy.args(["--override-variant", v]);
    }
    copy.args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        reference,
        &format!("oci:{dest}"),
    ]);
    util::output(&mut copy)?;

    // The pulled manifest is the one the index names for this platform.
    let expected = index["manifests"]
        .as_array()
        .and_then(|ms| {
            ms.iter()
                .find(|m| platform_name(&m["platform"]).as_deref() == Some(&p.to_string()))
        })
        .and_then(|m| m["digest"].as_str())
        .with_context(|| format!("index has no {p}"))?;
    let pulled = read_json(&dir.join("index.json"))?;
    let got = pulled["manifests"][0]["digest"].as_str().unwrap_or("none");
    ensure!(
        got == expected,
        "pulling {p} gave manifest {got}, the index names {expected}"
    );
    let config =
        util::output(Command::new("skopeo").args(["inspect", "--config", &format!("oci:{dest}")]))?
            .stdout;
    let config: Value = serde_json::from_slice(&config).context("parse the pulled config")?;
    ensure!(
        config["architecture"] == p.architecture
            && config["os"] == "linux"
            && config["variant"].as_str() == p.variant,
        "pulled {p}, config says {}/{}/{}",
        config["os"],
        config["architecture"],
        config["variant"]
    );

    let bundle = work.join(format!("bundle-{}", target.suffix));
    util::output(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &dest])
            .arg(&bundle),
    )?;
    let rootfs = bundle.join("rootfs");
    let mut entries: Vec<String> = std::fs::read_dir(&rootfs)
        .with_context(|| format!("read {}", rootfs.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    ensure!(
        entries == ["tikban"],
        "{p}: rootfs holds {entries:?}, expected only tikban"
    );
    let binary = rootfs.join("tikban");
    let built = dist.join(format!("tikban-{version}-{}", target.suffix));
    ensure!(
        std::fs::read(&binary)?
            == std::fs::read(&built).with_context(|| format!("read {}", built.display()))?,
        "{p}: the pulled /tikban differs from {}",
        built.display()
    );
    util::check_version(&binary, target.qemu, version)?;
    println!(
        "{p}: pulled {got}, umoci rootfs /tikban = dist/tikban-{version}-{}, --version ok ({})",
        target.suffix,
        target.qemu.unwrap_or("native")
    );
    Ok(())
}

/// A `docker-registry` on 127.0.0.1, storing under a temporary directory; killed on drop.
struct Registry {
    _proc: Reaper,
    port: u16,
}

impl Registry {
    fn start(work: &Path) -> Result<Registry> {
        let storage = work.join("storage");
        std::fs::create_dir_all(&storage).context("registry storage")?;
        let port = procs::free_port()?;
        let config = work.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .context("write registry config")?;
        let log_path = work.join("registry.log");
        let log = File::create(&log_path).context("registry log")?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("registry log")?)
            .stderr(log)
            .spawn()
            .context("start docker-registry")?;
        let mut proc = Reaper(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok((200, _)) = procs::http_get(port, "/v2/") {
                return Ok(Registry { _proc: proc, port });
            }
            if let Some(status) = proc.0.try_wait()? {
                bail!(
                    "docker-registry exited ({status}) before answering /v2/:\n{}",
                    procs::tail(&log_path)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer /v2/ on 127.0.0.1:{port} within {READY_WITHIN:?}:\n{}",
                    procs::tail(&log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("not a sha256 digest: {digest}"))?;
    Ok(layout.join("blobs/sha256").join(hex))
}

/// `linux/arm/v7` from a descriptor's `platform` object.
fn platform_name(platform: &Value) -> Option<String> {
    let os = platform["os"].as_str()?;
    let arch = platform["architecture"].as_str()?;
    Some(match platform["variant"].as_str() {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    })
}

/// The platforms an image index lists, in order.
fn platforms(index: &Value) -> Result<Vec<String>> {
    index["manifests"]
        .as_array()
        .context("index has no manifests")?
        .iter()
        .map(|m| platform_name(&m["platform"]).context("manifest without a platform"))
        .collect()
}

fn names(platforms: &[Platform]) -> Vec<String> {
    platforms.iter().map(ToString::to_string).collect()
}
