//! The release targets: Rust triple, RouterOS architecture, image platform, toolchain and the
//! qemu-user runner.
//!
//! Mapping from `docs/reference/routeros-containers.md` §1. armv7 and armv5te got no musl `rust-std` from the
//! toolchain mirror of the CI machines (rustup answered 404), so they build std from source on nightly (`docs/reference/build-env.md`, "Rust targets").

use crate::image::Platform;

/// One release target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Rust target triple.
    pub triple: &'static str,
    /// Suffix of the artefact names (`tikban-<version>-<suffix>.tar`): the RouterOS architecture,
    /// with `armv5` for EN7562CT devices (RouterOS `arm`, arm32v5 images only).
    pub suffix: &'static str,
    /// The platform written into the image config.
    pub platform: Platform,
    /// Built with `cargo +nightly zigbuild -Zbuild-std`.
    pub build_std: bool,
    /// `--version` runs through this qemu-user binary; `None` runs natively (x86_64 host).
    pub qemu: Option<&'static str>,
}

/// Every target `cargo xtask dist --all` builds.
pub const ALL: &[Target] = &[
    Target {
        triple: "aarch64-unknown-linux-musl",
        suffix: "arm64",
        platform: Platform {
            architecture: "arm64",
            variant: None,
        },
        build_std: false,
        qemu: Some("qemu-aarch64-static"),
    },
    Target {
        triple: "x86_64-unknown-linux-musl",
        suffix: "x86",
        platform: Platform {
            architecture: "amd64",
            variant: None,
        },
        build_std: false,
        qemu: None,
    },
    Target {
        triple: "armv7-unknown-linux-musleabihf",
        suffix: "arm",
        platform: Platform {
            architecture: "arm",
            variant: Some("v7"),
        },
        build_std: true,
        qemu: Some("qemu-arm-static"),
    },
    Target {
        triple: "armv5te-unknown-linux-musleabi",
        suffix: "armv5",
        platform: Platform {
            architecture: "arm",
            variant: Some("v5"),
        },
        build_std: true,
        qemu: Some("qemu-arm-static"),
    },
];

/// What a plain `cargo xtask dist` builds (and CI checks): the two stable-toolchain targets.
pub const DEFAULT: &[&str] = &["aarch64-unknown-linux-musl", "x86_64-unknown-linux-musl"];

/// Finds a target by triple or by artefact suffix (`arm64`, `x86`, `arm`, `armv5`).
pub fn find(name: &str) -> Option<&'static Target> {
    ALL.iter().find(|t| t.triple == name || t.suffix == name)
}

/// The target whose artefact name ends in `-<suffix>.tar` (or `-<suffix>`).
pub fn for_artefact(file_name: &str) -> Option<&'static Target> {
    let stem = file_name.strip_suffix(".tar").unwrap_or(file_name);
    ALL.iter()
        .find(|t| stem.ends_with(&format!("-{}", t.suffix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_exist_and_need_no_nightly() {
        for triple in DEFAULT {
            let t = find(triple).unwrap();
            assert!(!t.build_std, "{triple}");
        }
    }

    #[test]
    fn arm_images_carry_their_variant() {
        assert_eq!(find("arm").unwrap().platform.variant, Some("v7"));
        assert_eq!(find("armv5").unwrap().platform.variant, Some("v5"));
        assert_eq!(find("arm64").unwrap().platform.variant, None);
    }

    #[test]
    fn artefact_names_map_back_to_their_target() {
        let t = |n| for_artefact(n).map(|t| t.triple);
        assert_eq!(
            t("tikban-0.1.0-arm64.tar"),
            Some("aarch64-unknown-linux-musl")
        );
        assert_eq!(
            t("tikban-0.1.0-arm.tar"),
            Some("armv7-unknown-linux-musleabihf")
        );
        assert_eq!(
            t("tikban-0.1.0-armv5.tar"),
            Some("armv5te-unknown-linux-musleabi")
        );
        assert_eq!(
            t("dist/tikban-0.1.0-x86"),
            Some("x86_64-unknown-linux-musl")
        );
        assert_eq!(t("tikban-0.1.0-mips.tar"), None);
    }
}
