//! A multi-platform image in an OCI image layout (`dist/oci/`), for registries: RouterOS pulls
//! it with `remote-image=` and understands OCI manifests since 7.10
//! (`docs/reference/routeros-containers.md` §4.1). `skopeo copy --all --preserve-digests
//! oci:dist/oci:<version> docker://…` publishes it byte for byte.
//!
//! ```text
//! oci-layout                  {"imageLayoutVersion":"1.0.0"}
//! index.json                  one entry: the image index, ref.name = <version>
//! blobs/sha256/<index>        image index: one manifest per platform, with its platform
//! blobs/sha256/<manifest>     per platform: its config and its one layer
//! blobs/sha256/<config>       the same config bytes as in the docker-archive tar
//! blobs/sha256/<layer>        the docker-archive's layer tar, in a gzip member (see [`gzip_stored`])
//! ```
//!
//! Like the tars, the layout is a pure function of the binaries and the version: same input,
//! same digests.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::image::{self, Image};

pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The annotation `oci:<dir>:<tag>` looks up in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The files of an OCI image layout: path relative to the layout root → content.
pub struct Layout {
    pub files: BTreeMap<String, Vec<u8>>,
    /// `sha256:…` of the image index.
    pub index_digest: String,
}

/// The layout holding one image index over `images` (in the given order), tagged `tag`.
pub fn layout(images: &[Image<'_>], tag: &str) -> io::Result<Layout> {
    let mut files = BTreeMap::new();
    let mut manifests = Vec::new();
    for image in images {
        let blobs = image::blobs(image)?;
        let layer = gzip_stored(&blobs.layer);
        let layer_digest = add_blob(&mut files, layer.clone());
        let config_digest = add_blob(&mut files, blobs.config.clone());
        let manifest = image::to_json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": blobs.config.len()},
            "layers": [{"mediaType": LAYER_GZIP, "digest": layer_digest, "size": layer.len()}],
        }))?;
        let mut platform = json!({"architecture": image.platform.architecture, "os": "linux"});
        if let (Some(variant), Value::Object(map)) = (image.platform.variant, &mut platform) {
            map.insert("variant".to_owned(), Value::String(variant.to_owned()));
        }
        let size = manifest.len();
        manifests.push(json!({
            "mediaType": MANIFEST,
            "digest": add_blob(&mut files, manifest),
            "size": size,
            "platform": platform,
        }));
    }
    let index = image::to_json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": manifests,
    }))?;
    let index_size = index.len();
    let index_digest = add_blob(&mut files, index);
    files.insert(
        "index.json".to_owned(),
        image::to_json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [{
                "mediaType": INDEX,
                "digest": index_digest,
                "size": index_size,
                "annotations": {REF_NAME: tag},
            }],
        }))?,
    );
    files.insert(
        "oci-layout".to_owned(),
        image::to_json_bytes(&json!({"imageLayoutVersion": "1.0.0"}))?,
    );
    Ok(Layout {
        files,
        index_digest,
    })
}

/// Stores `blob` under `blobs/sha256/` and returns its digest.
fn add_blob(files: &mut BTreeMap<String, Vec<u8>>, blob: Vec<u8>) -> String {
    let hex = image::sha256_hex(&blob);
    files.insert(format!("blobs/sha256/{hex}"), blob);
    format!("sha256:{hex}")
}

/// Replaces `dir` with `layout` (stale blobs of an earlier build go).
pub fn write(dir: &Path, layout: &Layout) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    for (name, data) in &layout.files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&path, data).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// `data` as one gzip member whose deflate stream is stored blocks only (RFC 1952, RFC 1951
/// §3.2.4): every gzip reader takes it, and its bytes depend on nothing but `data` (no
/// compressor whose output could change between versions). Registries and RouterOS expect
/// `tar+gzip` layers; compression would save about 1 MiB of a 2 MiB layer.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    const MAX: usize = 0xffff;
    let blocks = data.len().div_ceil(MAX).max(1);
    let mut out = Vec::with_capacity(data.len() + blocks * 5 + 18);
    // ID1 ID2, CM=deflate, FLG=0, MTIME=0, XFL=0, OS=255 (unknown).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut chunks = data.chunks(MAX).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        // BFINAL, BTYPE=00 (stored); the rest of the byte pads to the boundary.
        out.push(u8::from(last));
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952 §2.3.1).
    out.extend_from_slice(&((data.len() & 0xffff_ffff) as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as gzip uses.
fn crc32(data: &[u8]) -> u32 {
    let table: [u32; 256] = std::array::from_fn(|n| {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        c
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::image::Platform;

    const PLATFORMS: [Platform; 3] = [
        Platform {
            architecture: "arm64",
            variant: None,
        },
        Platform {
            architecture: "amd64",
            variant: None,
        },
        Platform {
            architecture: "arm",
            variant: Some("v7"),
        },
    ];

    fn images(version: &'static str) -> Vec<Image<'static>> {
        PLATFORMS
            .iter()
            .zip([&b"arm64 binary"[..], b"x86 binary", b"armv7 binary"])
            .map(|(&platform, binary)| Image {
                binary,
                platform,
                version,
            })
            .collect()
    }

    fn json_at(layout: &Layout, name: &str) -> Value {
        serde_json::from_slice(&layout.files[name]).unwrap()
    }

    fn blob(layout: &Layout, digest: &Value) -> Vec<u8> {
        let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
        layout.files[&format!("blobs/sha256/{hex}")].clone()
    }

    /// Decompresses with the system's `gzip`, an independent reader.
    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut child = Command::new("gzip")
            .args(["-dc"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip (Debian package gzip) must be installed");
        let mut stdin = child.stdin.take().unwrap();
        let input = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "gzip -dc failed");
        out.stdout
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn stored_gzip_round_trips_through_gzip() {
        for len in [0, 1, 65_534, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            assert_eq!(gunzip(&gzip_stored(&data)), data, "length {len}");
        }
    }

    #[test]
    fn same_input_gives_same_digests() {
        let a = layout(&images("0.1.0"), "0.1.0").unwrap();
        let b = layout(&images("0.1.0"), "0.1.0").unwrap();
        assert_eq!(a.files, b.files);
        assert_eq!(a.index_digest, b.index_digest);
        let c = layout(&images("0.1.1"), "0.1.1").unwrap();
        assert_ne!(a.index_digest, c.index_digest);
    }

    #[test]
    fn every_blob_is_named_by_its_digest_and_referenced() {
        let l = layout(&images("0.1.0"), "0.1.0").unwrap();
        assert_eq!(
            json_at(&l, "oci-layout"),
            json!({"imageLayoutVersion": "1.0.0"})
        );
        let blobs: Vec<&String> = l.files.keys().filter(|k| k.starts_with("blobs/")).collect();
        for name in &blobs {
            let hex = name.strip_prefix("blobs/sha256/").unwrap();
            assert_eq!(image::sha256_hex(&l.files[*name]), hex);
        }
        // index + 3 × (manifest, config, layer)
        assert_eq!(blobs.len(), 1 + 3 * 3);
    }

    #[test]
    fn index_lists_each_platform_with_config_and_layer_of_the_tar() {
        let imgs = images("0.1.0");
        let l = layout(&imgs, "0.1.0").unwrap();
        let top = json_at(&l, "index.json");
        assert_eq!(top["manifests"].as_array().unwrap().len(), 1);
        let entry = &top["manifests"][0];
        assert_eq!(entry["mediaType"], INDEX);
        assert_eq!(entry["annotations"][REF_NAME], "0.1.0");
        assert_eq!(entry["digest"], json!(l.index_digest));
        let index_bytes = blob(&l, &entry["digest"]);
        assert_eq!(entry["size"], json!(index_bytes.len()));

        let index: Value = serde_json::from_slice(&index_bytes).unwrap();
        assert_eq!(index["mediaType"], INDEX);
        assert_eq!(index["schemaVersion"], 2);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), imgs.len());
        for (m, img) in manifests.iter().zip(&imgs) {
            let mut want = json!({"architecture": img.platform.architecture, "os": "linux"});
            if let Some(v) = img.platform.variant {
                want["variant"] = json!(v);
            }
            assert_eq!(m["platform"], want);
            assert_eq!(m["mediaType"], MANIFEST);
            let manifest_bytes = blob(&l, &m["digest"]);
            assert_eq!(m["size"], json!(manifest_bytes.len()));
            let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
            assert_eq!(manifest["mediaType"], MANIFEST);

            // The config is byte for byte the docker-archive's; the layer is its layer.tar.
            let tar_blobs = image::blobs(img).unwrap();
            assert_eq!(manifest["config"]["mediaType"], CONFIG);
            assert_eq!(
                manifest["config"]["digest"],
                json!(format!("sha256:{}", tar_blobs.config_hex))
            );
            assert_eq!(blob(&l, &manifest["config"]["digest"]), tar_blobs.config);
            let layers = manifest["layers"].as_array().unwrap();
            assert_eq!(layers.len(), 1);
            assert_eq!(layers[0]["mediaType"], LAYER_GZIP);
            let gz = blob(&l, &layers[0]["digest"]);
            assert_eq!(layers[0]["size"], json!(gz.len()));
            assert_eq!(gunzip(&gz), tar_blobs.layer);
        }
    }

    #[test]
    fn write_replaces_an_earlier_layout() {
        let dir = tempfile::tempdir().unwrap();
        let oci = dir.path().join("oci");
        let all = layout(&images("0.1.0"), "0.1.0").unwrap();
        write(&oci, &all).unwrap();
        let fewer = layout(&images("0.1.0")[..1], "0.1.0").unwrap();
        write(&oci, &fewer).unwrap();
        let mut on_disk = BTreeMap::new();
        for entry in walk(&oci) {
            let name = entry
                .strip_prefix(&oci)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            on_disk.insert(name, std::fs::read(&entry).unwrap());
        }
        assert_eq!(on_disk, fewer.files);
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
