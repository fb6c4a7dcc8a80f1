//! PEM loading: the only place tikban reads PEM. Files and inline values are read within
//! [`MAX_PEM_BYTES`] and parsed with `rustls-pki-types`' [`PemObject`]; the clients get DER.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::VARS;
use super::check::{Checker, quote};

impl Checker {
    /// Where one PEM input comes from: its path variable or its inline variable (not both).
    pub(super) fn pem_source<'a>(
        &mut self,
        path_var: &'static str,
        path: Option<&'a str>,
        pem_var: &'static str,
        inline: Option<&'a str>,
    ) -> Option<PemSource<'a>> {
        let secret = VARS.iter().any(|v| v.name == pem_var && v.secret);
        match (path, inline) {
            (Some(_), Some(_)) => {
                self.problem(
                    pem_var,
                    format!("set either {path_var} or {pem_var}, not both"),
                );
                None
            }
            (Some(p), None) => Some(PemSource {
                var: path_var,
                input: PemInput::Path(p),
                secret: false,
            }),
            (None, Some(text)) if !text.contains("-----BEGIN ") => {
                self.problem(
                    pem_var,
                    "is not PEM text; expected a block starting with -----BEGIN",
                );
                None
            }
            (None, Some(text)) => Some(PemSource {
                var: pem_var,
                input: PemInput::Inline(text),
                secret,
            }),
            (None, None) => None,
        }
    }

    /// Reads and parses certificates: at least one `CERTIFICATE` block.
    pub(super) fn certificates(
        &mut self,
        src: PemSource<'_>,
    ) -> Option<Vec<CertificateDer<'static>>> {
        let bytes = self.pem_bytes(src)?;
        let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
        match parsed {
            Ok(certs) if certs.is_empty() => {
                self.problem(
                    src.var,
                    format!("{} holds no CERTIFICATE block", src.describe()),
                );
                None
            }
            Ok(certs) => Some(certs),
            Err(e) => {
                self.problem(src.var, format!("{} {}", src.describe(), pem_error(&e)));
                None
            }
        }
    }

    /// Reads and parses a private key: exactly one `PRIVATE KEY` block (PKCS#8, PKCS#1 or SEC1).
    pub(super) fn private_key(&mut self, src: PemSource<'_>) -> Option<PrivateKeyDer<'static>> {
        let bytes = self.pem_bytes(src)?;
        let parsed: Result<Vec<_>, _> = PrivateKeyDer::pem_slice_iter(&bytes).collect();
        match parsed {
            Ok(mut keys) if keys.len() == 1 => keys.pop(),
            Ok(keys) if keys.is_empty() => {
                self.problem(
                    src.var,
                    format!(
                        "{} holds no PRIVATE KEY block (PKCS#8, RSA or EC)",
                        src.describe()
                    ),
                );
                None
            }
            Ok(keys) => {
                self.problem(
                    src.var,
                    format!(
                        "{} holds {} private keys; expected exactly one",
                        src.describe(),
                        keys.len()
                    ),
                );
                None
            }
            Err(e) => {
                self.problem(src.var, format!("{} {}", src.describe(), pem_error(&e)));
                None
            }
        }
    }

    /// The bytes of a PEM input, within [`MAX_PEM_BYTES`].
    fn pem_bytes<'a>(&mut self, src: PemSource<'a>) -> Option<Cow<'a, [u8]>> {
        let result = match src.input {
            PemInput::Inline(text) if text.len() as u64 > MAX_PEM_BYTES => Err(format!(
                "is {} bytes; PEM text is limited to {MAX_PEM_BYTES} bytes (1 MiB)",
                text.len()
            )),
            PemInput::Inline(text) => Ok(Cow::Borrowed(text.as_bytes())),
            PemInput::Path(path) => read_pem_file(Path::new(path))
                .map(Cow::Owned)
                .map_err(|e| format!("{} {e}", src.describe())),
        };
        result.map_err(|m| self.problem(src.var, m)).ok()
    }
}

/// Largest PEM file or inline PEM value accepted. A CA bundle is tens of KiB (Mozilla's whole
/// root store is about 200 KiB), so 1 MiB is generous while a mistaken path such as `/dev/zero`
/// or a log file cannot make tikban read without end.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// One PEM input and the variable it came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct PemSource<'a> {
    pub(super) var: &'static str,
    pub(super) input: PemInput<'a>,
    /// The inline text is a secret (a private key): never quoted.
    pub(super) secret: bool,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum PemInput<'a> {
    Path(&'a str),
    Inline(&'a str),
}

impl PemSource<'_> {
    /// How messages name the input: the quoted path, or "the PEM text". Never the text itself.
    fn describe(&self) -> String {
        match self.input {
            PemInput::Path(p) => format!("file {}", quote(p)),
            PemInput::Inline(_) if self.secret => "the given PEM text".to_owned(),
            PemInput::Inline(_) => "the PEM text".to_owned(),
        }
    }
}

/// What is wrong with PEM text, without quoting any of it (it may be a private key).
fn pem_error(e: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "is not valid PEM: a block has no -----END line",
        E::IllegalSectionStart { .. } => "is not valid PEM: a -----BEGIN line is malformed",
        E::Base64Decode(_) => "is not valid PEM: a block is not valid base64",
        E::SectionTooLarge => "is not valid PEM: a block is too large",
        _ => "is not valid PEM",
    }
}

/// Reads a PEM file: a regular file of at most [`MAX_PEM_BYTES`], checked with its metadata
/// **before** reading (so `/dev/zero`, a FIFO or a directory is refused without blocking or
/// reading), then read with a bounded read in case it grows meanwhile.
fn read_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err(format!("is not a regular file ({})", file_kind(&meta)));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "is {} bytes; PEM files are limited to {MAX_PEM_BYTES} bytes (1 MiB)",
            meta.len()
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    // The path may name another file by now: check what was opened, too.
    let opened = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if !opened.is_file() {
        return Err(format!("is not a regular file ({})", file_kind(&opened)));
    }
    let mut bytes = Vec::with_capacity(opened.len().min(MAX_PEM_BYTES) as usize);
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "grew past {MAX_PEM_BYTES} bytes (1 MiB) while it was read"
        ));
    }
    Ok(bytes)
}

/// "a directory", "a FIFO", … for a path that is not a regular file.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}
