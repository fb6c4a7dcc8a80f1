//! `cargo xtask dist` (and `registry-check`) on a machine without its tools: it must name every
//! missing tool with the command that installs it, and exit non-zero before doing anything.
//!
//! The xtask binary runs with a `PATH` that holds nothing, or only a stand-in `rustup` whose
//! answers are fixed, so the result does not depend on what this machine has installed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// `KEY` from `scripts/dist-tools.env`, read here independently of the xtask's own parser.
fn pin(key: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dist-tools.env");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in {}", path.display()))
        .to_owned()
}

/// Runs `xtask args…` with only `path` on PATH and no other environment.
fn xtask(path: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("HOME", path)
        .output()
        .unwrap()
}

/// `- name:` followed on the next line by a command that contains `command`.
fn lists(stderr: &str, name: &str, command: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().collect();
    lines.windows(2).any(|w| {
        w[0].trim() == format!("- {name}:") && w[1].starts_with("      ") && w[1].contains(command)
    })
}

fn assert_refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs tools that are not installed here"),
        "{stderr}"
    );
    // Nothing was built: the build step announces itself with "=== <triple>: cargo zigbuild".
    assert!(!stderr.contains("cargo zigbuild"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[test]
fn empty_path_names_every_tool_and_its_install_command() {
    let empty = tempfile::tempdir().unwrap();
    let out = xtask(empty.path(), &["dist", "--all"]);
    let stderr = assert_refused(&out);

    let zig = format!("python3 -m pip install 'ziglang=={}'", pin("ZIGLANG"));
    let zigbuild = format!(
        "python3 -m pip install 'cargo-zigbuild=={}'",
        pin("CARGO_ZIGBUILD")
    );
    let expected: &[(&str, &str)] = &[
        ("rustup", "https://sh.rustup.rs | sh"),
        (
            "python3 with pip (installs zig and cargo-zigbuild)",
            "apt-get install -y --no-install-recommends python3-pip",
        ),
        ("zig (the linker and C compiler)", &zig),
        ("cargo-zigbuild", &zigbuild),
        (
            "rustup target aarch64-unknown-linux-musl",
            "rustup target add aarch64-unknown-linux-musl",
        ),
        (
            "rustup target x86_64-unknown-linux-musl",
            "rustup target add x86_64-unknown-linux-musl",
        ),
        (
            "nightly toolchain with rust-src (armv7-unknown-linux-musleabihf builds std from source, -Zbuild-std)",
            "rustup toolchain install nightly --profile minimal --component rust-src",
        ),
        (
            "readelf",
            "apt-get install -y --no-install-recommends binutils",
        ),
        (
            "qemu-aarch64-static",
            "apt-get install -y --no-install-recommends qemu-user-static",
        ),
        (
            "qemu-arm-static",
            "apt-get install -y --no-install-recommends qemu-user-static",
        ),
        (
            "skopeo",
            "apt-get install -y --no-install-recommends skopeo",
        ),
        ("umoci", "apt-get install -y --no-install-recommends umoci"),
    ];
    for (name, command) in expected {
        assert!(
            lists(&stderr, name, command),
            "{name} / {command}:\n{stderr}"
        );
    }
    assert_eq!(
        stderr.matches("\n  - ").count(),
        expected.len(),
        "exactly these tools:\n{stderr}"
    );
    assert!(
        stderr.contains("Or install them all with: cargo xtask dist --all --install-tools"),
        "{stderr}"
    );
}

#[test]
fn installed_rustup_parts_are_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rustup = dir.path().join("rustup");
    std::fs::write(
        &rustup,
        r#"#!/bin/sh
case "$*" in
    --version) echo "rustup 1.0.0 (stand-in)" ;;
    "target list --installed") echo x86_64-unknown-linux-gnu; echo x86_64-unknown-linux-musl ;;
    "component list --installed --toolchain nightly") echo rustc-x86_64-unknown-linux-gnu ;;
    *) echo "stand-in rustup: unexpected $*" >&2; exit 2 ;;
esac
"#,
    )
    .unwrap();
    std::fs::set_permissions(&rustup, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Default targets: aarch64 and x86_64, stable toolchain only.
    let stderr = assert_refused(&xtask(dir.path(), &["dist"]));
    assert!(
        lists(
            &stderr,
            "rustup target aarch64-unknown-linux-musl",
            "rustup target add aarch64-unknown-linux-musl"
        ),
        "{stderr}"
    );
    for absent in [
        "- rustup:",
        "x86_64-unknown-linux-musl",
        "nightly",
        "qemu-arm-static",
    ] {
        assert!(!stderr.contains(absent), "{absent}:\n{stderr}");
    }
    assert!(
        lists(&stderr, "qemu-aarch64-static", "qemu-user-static"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Or install them all with: cargo xtask dist --install-tools"),
        "{stderr}"
    );

    // One arm target: nightly is there, rust-src is not.
    let stderr = assert_refused(&xtask(dir.path(), &["dist", "--target", "armv5"]));
    assert!(
        lists(
            &stderr,
            "rust-src for nightly (armv5te-unknown-linux-musleabi builds std from source, -Zbuild-std)",
            "rustup component add rust-src --toolchain nightly"
        ),
        "{stderr}"
    );
    assert!(
        lists(&stderr, "qemu-arm-static", "qemu-user-static"),
        "{stderr}"
    );
    for absent in ["aarch64", "rustup target", "qemu-aarch64-static"] {
        assert!(!stderr.contains(absent), "{absent}:\n{stderr}");
    }
    assert!(
        stderr.contains("cargo xtask dist --target armv5 --install-tools"),
        "{stderr}"
    );
}

#[test]
fn registry_check_names_its_tools_too() {
    let empty = tempfile::tempdir().unwrap();
    let out = xtask(empty.path(), &["registry-check", "--all"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    let apt = "apt-get install -y --no-install-recommends";
    let expected = [
        ("docker-registry", format!("{apt} docker-registry")),
        ("skopeo", format!("{apt} skopeo")),
        ("umoci", format!("{apt} umoci")),
        ("qemu-aarch64-static", format!("{apt} qemu-user-static")),
        ("qemu-arm-static", format!("{apt} qemu-user-static")),
    ];
    for (name, command) in &expected {
        assert!(
            lists(&stderr, name, command),
            "{name} / {command}:\n{stderr}"
        );
    }
    assert_eq!(stderr.matches("\n  - ").count(), expected.len(), "{stderr}");
    assert!(
        stderr
            .contains("Or install them all with: cargo xtask registry-check --all --install-tools"),
        "{stderr}"
    );
    // The registry was never started: no port was announced.
    assert!(!stderr.contains("registry on 127.0.0.1"), "{stderr}");
}
