//! A docker-archive ("docker save") tar holding one static binary, for RouterOS
//! `/container add file=`.
//!
//! RouterOS loads the docker-save layout, one architecture per tar; it rejects OCI-layout tars and
//! multi-platform tars (`docs/reference/routeros-containers.md` §4.2). The safest form is one **uncompressed**
//! layer, which is what this writes. Members of the outer tar (§4.3, Docker Image Specification
//! v1.2):
//!
//! ```text
//! <layer>/            directory; <layer> = sha256 hex of layer.tar
//! <layer>/VERSION     "1.0"                                  (legacy, optional)
//! <layer>/json        v1 image JSON                          (legacy, optional)
//! <layer>/layer.tar   the root filesystem: just `tikban`, mode 0755
//! <config>.json       image config; <config> = sha256 hex of this file
//! manifest.json       [{"Config", "RepoTags", "Layers"}]
//! repositories        {"tikban": {"<version>": "<layer>"}}  (legacy, optional)
//! ```
//!
//! The output is a pure function of its inputs: entries sorted by name, mtime 0, uid/gid 0, no
//! user or group names, JSON with sorted keys and a fixed `created` date. Building twice gives
//! the same bytes, so a release tar can be checked by rebuilding it.

use std::io;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Fixed creation date written into the config and history: the Unix epoch, for reproducibility.
pub const CREATED: &str = "1970-01-01T00:00:00Z";

/// Path of the binary inside the image, and the entrypoint.
pub const ENTRYPOINT: &str = "/tikban";

/// An image platform in Go's naming, as the config JSON spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    /// `GOARCH` name: `arm64`, `arm` or `amd64`.
    pub architecture: &'static str,
    /// `v7` or `v5` for `arm`; `None` elsewhere.
    pub variant: Option<&'static str>,
}

impl std::fmt::Display for Platform {
    /// `linux/arm64`, `linux/arm/v7`: the form registries and `--platform` flags use.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "linux/{}", self.architecture)?;
        match self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// What goes into one image.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// The static binary, stored as `/tikban`.
    pub binary: &'a [u8],
    /// The platform recorded in the config.
    pub platform: Platform,
    /// tikban's version, used as the image tag (`tikban:<version>`).
    pub version: &'a str,
}

/// The two blobs every form of the image shares: the layer tar and the config that names it.
/// The docker-archive tar and the OCI layout ([`crate::oci`]) hold these same bytes, so the
/// config digest is the same in both.
pub struct Blobs {
    /// The uncompressed layer tar.
    pub layer: Vec<u8>,
    /// SHA-256 hex of [`Blobs::layer`] (the `diff_id`).
    pub layer_hex: String,
    /// The image config JSON.
    pub config: Vec<u8>,
    /// SHA-256 hex of [`Blobs::config`].
    pub config_hex: String,
}

/// The layer and config of `image`.
pub fn blobs(image: &Image<'_>) -> io::Result<Blobs> {
    let layer = layer_tar(image.binary)?;
    let layer_hex = sha256_hex(&layer);
    let config = to_json_bytes(&config_json(image, &layer_hex))?;
    let config_hex = sha256_hex(&config);
    Ok(Blobs {
        layer,
        layer_hex,
        config,
        config_hex,
    })
}

/// Builds the docker-archive tar for `image`.
pub fn docker_archive(image: &Image<'_>) -> io::Result<Vec<u8>> {
    let Blobs {
        layer,
        layer_hex,
        config,
        config_hex,
    } = blobs(image)?;
    let config_name = format!("{config_hex}.json");
    let layer_path = format!("{layer_hex}/layer.tar");
    let tag = format!("tikban:{}", image.version);

    let manifest = to_json_bytes(&json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": [layer_path],
    }]))?;
    let repositories = to_json_bytes(&json!({ "tikban": { image.version: layer_hex } }))?;
    let mut v1 = config_json(image, &layer_hex);
    if let Value::Object(map) = &mut v1 {
        map.insert("id".to_owned(), Value::String(layer_hex.clone()));
        map.remove("rootfs");
        map.remove("history");
    }
    let v1 = to_json_bytes(&v1)?;

    let mut members: Vec<(String, Member<'_>)> = vec![
        (format!("{layer_hex}/"), Member::Dir),
        (format!("{layer_hex}/VERSION"), Member::File(b"1.0", 0o644)),
        (format!("{layer_hex}/json"), Member::File(&v1, 0o644)),
        (layer_path, Member::File(&layer, 0o644)),
        (config_name, Member::File(&config, 0o644)),
        ("manifest.json".to_owned(), Member::File(&manifest, 0o644)),
        (
            "repositories".to_owned(),
            Member::File(&repositories, 0o644),
        ),
    ];
    members.sort_by(|a, b| a.0.cmp(&b.0));
    write_tar(&members)
}

/// The image config (`<sha256>.json`).
fn config_json(image: &Image<'_>, layer_hex: &str) -> Value {
    let mut config = json!({
        "architecture": image.platform.architecture,
        "os": "linux",
        "created": CREATED,
        "config": {
            "Entrypoint": [ENTRYPOINT],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.title": "tikban",
                "org.opencontainers.image.version": image.version,
            },
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_hex}")] },
        "history": [{ "created": CREATED, "created_by": "cargo xtask dist: COPY tikban /tikban" }],
    });
    if let (Some(variant), Value::Object(map)) = (image.platform.variant, &mut config) {
        map.insert("variant".to_owned(), Value::String(variant.to_owned()));
    }
    config
}

/// The single layer: `tikban`, a regular file with mode 0755.
fn layer_tar(binary: &[u8]) -> io::Result<Vec<u8>> {
    write_tar(&[(
        ENTRYPOINT.trim_start_matches('/').to_owned(),
        Member::File(binary, 0o755),
    )])
}

/// One member of a tar.
enum Member<'a> {
    Dir,
    File(&'a [u8], u32),
}

/// Writes `members` in the given order with fixed metadata (ustar headers, mtime 0, root owner).
fn write_tar(members: &[(String, Member<'_>)]) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, member) in members {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match member {
            Member::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, io::empty())?;
            }
            Member::File(data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data)?;
            }
        }
    }
    builder.into_inner()
}

pub fn to_json_bytes(value: &Value) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;

    use super::*;

    const ARM64: Platform = Platform {
        architecture: "arm64",
        variant: None,
    };
    const ARMV7: Platform = Platform {
        architecture: "arm",
        variant: Some("v7"),
    };

    fn image(platform: Platform) -> Image<'static> {
        Image {
            binary: b"\x7fELF not really a binary",
            platform,
            version: "0.1.0",
        }
    }

    /// name → (mode, mtime, uid, gid, content), in archive order.
    fn entries(tar_bytes: &[u8]) -> Vec<(String, u32, u64, u64, u64, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.push((
                entry.path().unwrap().to_string_lossy().into_owned(),
                h.mode().unwrap(),
                h.mtime().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                data,
            ));
        }
        out
    }

    fn files(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
        entries(tar_bytes)
            .into_iter()
            .map(|(name, .., data)| (name, data))
            .collect()
    }

    fn json_of(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Value {
        serde_json::from_slice(&files[name]).unwrap()
    }

    #[test]
    fn same_input_gives_same_bytes() {
        let a = docker_archive(&image(ARM64)).unwrap();
        let b = docker_archive(&image(ARM64)).unwrap();
        assert_eq!(a, b);
        let other = Image {
            version: "0.1.1",
            ..image(ARM64)
        };
        assert_ne!(a, docker_archive(&other).unwrap());
    }

    #[test]
    fn members_are_sorted_with_fixed_metadata() {
        let tar_bytes = docker_archive(&image(ARM64)).unwrap();
        let all = entries(&tar_bytes);
        let names: Vec<_> = all.iter().map(|e| e.0.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 7, "{names:?}");
        for (name, _, mtime, uid, gid, _) in &all {
            assert_eq!((*mtime, *uid, *gid), (0, 0, 0), "{name}");
        }
    }

    #[test]
    fn manifest_points_at_members_whose_digests_match() {
        let files = files(&docker_archive(&image(ARM64)).unwrap());
        let manifest = json_of(&files, "manifest.json");
        let entry = &manifest[0];
        assert_eq!(entry["RepoTags"], json!(["tikban:0.1.0"]));

        let config_name = entry["Config"].as_str().unwrap();
        let config_bytes = &files[config_name];
        assert_eq!(config_name, format!("{}.json", sha256_hex(config_bytes)));

        let layers = entry["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "exactly one layer");
        let layer_name = layers[0].as_str().unwrap();
        let layer = &files[layer_name];
        let layer_hex = sha256_hex(layer);
        assert_eq!(layer_name, format!("{layer_hex}/layer.tar"));

        let config: Value = serde_json::from_slice(config_bytes).unwrap();
        assert_eq!(
            config["rootfs"],
            json!({"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]})
        );
        assert_eq!(files[&format!("{layer_hex}/VERSION")], b"1.0");
        assert_eq!(
            json_of(&files, "repositories")["tikban"]["0.1.0"],
            json!(layer_hex)
        );
    }

    #[test]
    fn layer_is_uncompressed_and_holds_only_the_executable_binary() {
        let files = files(&docker_archive(&image(ARM64)).unwrap());
        let manifest = json_of(&files, "manifest.json");
        let layer = &files[manifest[0]["Layers"][0].as_str().unwrap()];
        let inner = entries(layer);
        assert_eq!(inner.len(), 1);
        let (name, mode, mtime, uid, gid, data) = &inner[0];
        assert_eq!(name, "tikban");
        assert_eq!(*mode, 0o755);
        assert_eq!((*mtime, *uid, *gid), (0, 0, 0));
        assert_eq!(data.as_slice(), image(ARM64).binary);
    }

    #[test]
    fn config_carries_platform_and_entrypoint() {
        for (platform, variant) in [(ARM64, None), (ARMV7, Some("v7"))] {
            let files = files(&docker_archive(&image(platform)).unwrap());
            let manifest = json_of(&files, "manifest.json");
            let config = json_of(&files, manifest[0]["Config"].as_str().unwrap());
            assert_eq!(config["architecture"], json!(platform.architecture));
            assert_eq!(config["os"], json!("linux"));
            assert_eq!(config["variant"].as_str(), variant);
            assert_eq!(config["config"]["Entrypoint"], json!(["/tikban"]));
            assert_eq!(config["created"], json!(CREATED));
        }
    }

    #[test]
    fn platforms_print_as_registries_name_them() {
        assert_eq!(ARM64.to_string(), "linux/arm64");
        assert_eq!(ARMV7.to_string(), "linux/arm/v7");
    }

    #[test]
    fn sha256_hex_matches_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
