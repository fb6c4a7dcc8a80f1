//! Test harness (feature `test-harness`): a real CrowdSec LAPI (Debian 1.4.6) per test.
//!
//! Follows `docs/reference/crowdsec-lapi.md` §9: a temporary directory with the minimal LAPI-only config (no
//! `online_client` section, one profile, sqlite WAL), `cscli machines add --auto`, one bouncer key
//! per client (`cscli bouncers add NAME -k KEY`, keys share the stream cursor), then
//! `crowdsec -c CFG -no-cs` on a free port, ready once `GET /health` answers. The process is killed
//! on drop.
//!
//! The port is picked by binding port 0 and releasing it, and `crowdsec` binds it a moment later:
//! another process may take it in between (the port race). `crowdsec` then exits (`bind: address
//! already in use`), and the other process may even answer `/health` first. So the harness only
//! calls a LAPI ready when the listening socket belongs to the `crowdsec` it started (Linux
//! `/proc`), and starts over on a new port when `crowdsec` exited or the port is someone else's. Fixtures go in through `cscli decisions add/delete/import` (these talk to the running
//! LAPI as the machine).
//!
//! The binaries come from `$TIKBAN_CROWDSEC_BIN` or `<workspace>/target/deps/crowdsec/usr/bin`
//! (`scripts/install-crowdsec.sh`). When they are missing the harness **panics** with that hint:
//! integration tests must fail, never skip.
//!
//! This is test code: it panics with a descriptive message on any setup failure.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Directory holding `crowdsec` and `cscli`.
pub fn crowdsec_bin_dir() -> PathBuf {
    let dir = match std::env::var_os("TIKBAN_CROWDSEC_BIN") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/deps/crowdsec/usr/bin"),
    };
    for b in ["crowdsec", "cscli"] {
        assert!(
            dir.join(b).is_file(),
            "CrowdSec binary {} not found: run `bash scripts/install-crowdsec.sh` (or set TIKBAN_CROWDSEC_BIN)",
            dir.join(b).display()
        );
    }
    dir
}

/// Test PKI made with rcgen: a CA, a server certificate for `127.0.0.1`, and client certificates
/// with a chosen OU.
pub struct TestPki {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// Server certificate, PEM.
    pub server_cert_pem: String,
    /// Server key, PEM.
    pub server_key_pem: String,
}

impl TestPki {
    /// A new CA and server certificate (SAN `127.0.0.1` and `localhost`).
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "tikban test CA");
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = p.self_signed(&ca_key).expect("self-sign CA");
        let key = KeyPair::generate().expect("server key");
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        p.subject_alt_names
            .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
        p.distinguished_name.push(DnType::CommonName, "lapi");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("sign server cert");
        TestPki {
            ca_pem: ca_cert.pem(),
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
            ca_cert,
            ca_key,
        }
    }

    /// A client certificate `(cert_pem, key_pem)` with common name `cn` and OU `ou`.
    pub fn client_cert(&self, cn: &str, ou: &str) -> (String, String) {
        let key = KeyPair::generate().expect("client key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("client params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, ou);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign client cert");
        (cert.pem(), key.serialize_pem())
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A running LAPI in its own temporary directory.
pub struct Lapi {
    dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
    port: u16,
    tls: bool,
    child: Child,
}

static BOUNCERS: AtomicU32 = AtomicU32::new(0);

/// Start attempts, each on a new port: enough to get past a port taken between picking and
/// binding it.
const START_ATTEMPTS: u32 = 5;

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// The inode of the socket listening on `127.0.0.1:port` (`/proc/net/tcp`, state `0A`).
fn listening_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    // `local_address` is the address in host byte order then the port, both in hex:
    // 127.0.0.1:8080 is `0100007F:1F90` on a little-endian host.
    let local = format!(
        "{:08X}:{port:04X}",
        u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets())
    );
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (address, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        (*address == local && *state == "0A")
            .then(|| inode.parse().ok())
            .flatten()
    })
}

/// True when process `pid` holds the socket listening on `127.0.0.1:port`.
fn owns_listener(pid: u32, port: u16) -> bool {
    let Some(inode) = listening_inode(port) else {
        return false;
    };
    let socket = PathBuf::from(format!("socket:[{inode}]"));
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == socket))
        })
        .unwrap_or(false)
}

impl Lapi {
    /// Starts a plain-HTTP LAPI.
    pub fn start() -> Self {
        Self::start_inner(None, None)
    }

    /// Starts a plain-HTTP LAPI whose temporary directory lives under `parent` (the demo keeps
    /// everything under `target/`).
    pub fn start_in(parent: &Path) -> Self {
        Self::start_inner(None, Some(parent))
    }

    /// Starts an HTTPS LAPI using `pki`, client certificates verified if given, bouncers accepted
    /// with OU `bouncer-ou` (`api.server.tls`, §2).
    pub fn start_tls(pki: &TestPki) -> Self {
        Self::start_inner(Some(pki), None)
    }

    fn start_inner(pki: Option<&TestPki>, parent: Option<&Path>) -> Self {
        let bin = crowdsec_bin_dir();
        let mut last_err = String::new();
        for _attempt in 0..START_ATTEMPTS {
            match Self::try_start(&bin, pki, parent) {
                Ok(l) => return l,
                Err(e) => last_err = e,
            }
        }
        panic!("LAPI did not start: {last_err}");
    }

    fn try_start(bin: &Path, pki: Option<&TestPki>, parent: Option<&Path>) -> Result<Self, String> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("tikban-lapi-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p),
            None => builder.tempdir(),
        }
        .map_err(|e| e.to_string())?;
        let d = dir.path();
        for sub in ["data", "hub"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| e.to_string())?;
        }
        let etc = bin.join("../../etc/crowdsec");
        for f in ["profiles.yaml", "simulation.yaml"] {
            std::fs::copy(etc.join(f), d.join(f)).map_err(|e| format!("copy {f}: {e}"))?;
        }
        write(&d.join("acquis.yaml"), "")?;
        write(&d.join("hub/.index.json"), "{}")?;
        write(&d.join("local_api_credentials.yaml"), "")?;
        let port = free_port();
        let tls_section = match pki {
            None => String::new(),
            Some(pki) => {
                write(&d.join("ca.pem"), &pki.ca_pem)?;
                write(&d.join("server.pem"), &pki.server_cert_pem)?;
                write(&d.join("server-key.pem"), &pki.server_key_pem)?;
                format!(
                    "    tls:\n      cert_file: {d}/server.pem\n      key_file: {d}/server-key.pem\n      ca_cert_path: {d}/ca.pem\n      client_verification: VerifyClientCertIfGiven\n      bouncers_allowed_ou: [bouncer-ou]\n      agents_allowed_ou: [agent-ou]\n",
                    d = d.display()
                )
            }
        };
        let config = format!(
            "common: {{daemonize: false, log_media: stdout, log_level: info, working_dir: .}}
config_paths:
  config_dir: {d}/
  data_dir: {d}/data/
  simulation_path: {d}/simulation.yaml
  hub_dir: {d}/hub/
  index_path: {d}/hub/.index.json
crowdsec_service: {{acquisition_path: {d}/acquis.yaml}}
db_config: {{type: sqlite, db_path: {d}/data/crowdsec.db, use_wal: true, log_level: info}}
api:
  client: {{credentials_path: {d}/local_api_credentials.yaml, insecure_skip_verify: true}}
  server:
    listen_uri: 127.0.0.1:{port}
    profiles_path: {d}/profiles.yaml
    trusted_ips: [127.0.0.1]
{tls_section}prometheus: {{enabled: false}}
",
            d = d.display()
        );
        let config_path = d.join("config.yaml");
        write(&config_path, &config)?;
        let run = |args: &[&str]| -> Result<String, String> {
            let out = Command::new(bin.join("cscli"))
                .arg("-c")
                .arg(&config_path)
                .args(args)
                .output()
                .map_err(|e| format!("run cscli: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cscli {args:?} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let creds = d.join("local_api_credentials.yaml");
        let creds_s = creds.to_string_lossy().into_owned();
        run(&["machines", "add", "testmachine", "--auto", "-f", &creds_s])?;
        if pki.is_some() {
            // cscli talks to the TLS listener as the machine (password login, no client cert).
            let text = std::fs::read_to_string(&creds).map_err(|e| e.to_string())?;
            write(&creds, &text.replace("http://", "https://"))?;
        }
        let log = std::fs::File::create(d.join("lapi.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin.join("crowdsec"))
            .arg("-c")
            .arg(&config_path)
            .arg("-no-cs")
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn crowdsec: {e}"))?;
        let mut lapi = Lapi {
            dir,
            bin: bin.to_owned(),
            config: config_path,
            port,
            tls: pki.is_some(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = lapi.child.try_wait() {
                // Most likely the port race: `bind: address already in use` in the log.
                return Err(format!(
                    "crowdsec exited with {status}: {}",
                    lapi.log_tail()
                ));
            }
            // An answer on the port is only ours if our crowdsec holds the listening socket;
            // another process that took the port would exit us soon (see the module docs).
            if lapi.listening() && owns_listener(lapi.child.id(), port) {
                return Ok(lapi);
            }
            if Instant::now() > deadline {
                return Err(format!("LAPI not ready after 20 s: {}", lapi.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn listening(&self) -> bool {
        if self.tls {
            // A TCP accept is enough for TLS; cscli calls below confirm it works.
            return TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok();
        }
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.starts_with("HTTP/1.1 200")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The last 2 KiB of the LAPI log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("lapi.log")).unwrap_or_default();
        let start = log.len().saturating_sub(2048);
        log.get(start..).unwrap_or(&log).to_owned()
    }

    /// The whole LAPI log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lapi.log")).unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT/` or `https://…`.
    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}/",
            if self.tls { "https" } else { "http" },
            self.port
        )
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `cscli -c CFG args…`, panicking with its output on failure; returns stdout.
    ///
    /// LAPI 1.4.6 keeps sqlite (WAL) and may answer a write with "database is locked" while a
    /// bouncer's poll updates its row on a loaded machine; such a refusal is retried, up to four
    /// times with a growing pause. Any other failure panics at once.
    pub fn cscli(&self, args: &[&str]) -> String {
        let run = || {
            Command::new(self.bin.join("cscli"))
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .output()
                .expect("run cscli")
        };
        let mut out = run();
        for pause_ms in [200, 400, 800, 1600] {
            let locked = !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("database is locked");
            if !locked {
                break;
            }
            std::thread::sleep(Duration::from_millis(pause_ms));
            out = run();
        }
        assert!(
            out.status.success(),
            "cscli {args:?} failed: {}{}\nLAPI log: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Registers a bouncer and returns its fresh API key (one key per client: keys share the
    /// stream cursor).
    pub fn add_bouncer(&self, name: &str) -> String {
        let n = BOUNCERS.fetch_add(1, Ordering::Relaxed);
        let key = format!("tikbantestkey{:08x}{n:04}{}", std::process::id(), self.port);
        self.cscli(&["bouncers", "add", name, "-k", &key]);
        key
    }

    /// Registers a validated watcher (machine) with a fresh password and returns
    /// `(machine_id, password)`: `cscli machines add NAME --password PW -f FILE` (1.4.6 has
    /// `-p/--password`; `-f` keeps the harness's own credentials file untouched). `machines add`
    /// writes the database directly and validates the machine.
    pub fn add_machine(&self, name: &str) -> (String, String) {
        let n = BOUNCERS.fetch_add(1, Ordering::Relaxed);
        let password = format!("tikbantestpw{:08x}{n:04}{}", std::process::id(), self.port);
        let file = self.dir.path().join(format!("machine-{n}.yaml"));
        let file = file.to_string_lossy().into_owned();
        self.cscli(&[
            "machines",
            "add",
            name,
            "--password",
            &password,
            "-f",
            &file,
        ]);
        (name.to_owned(), password)
    }

    /// `cscli decisions add`: `--range` when `value` has a `/` (1.4.6 refuses a CIDR in `--ip`),
    /// else `--ip`; `extra` is appended (e.g. `["--type", "captcha"]`).
    pub fn add_decision(&self, value: &str, duration: &str, extra: &[&str]) {
        let flag = if value.contains('/') {
            "--range"
        } else {
            "--ip"
        };
        let mut args = vec!["decisions", "add", flag, value, "--duration", duration];
        args.extend_from_slice(extra);
        self.cscli(&args);
    }

    /// `cscli decisions delete ARGS…` (e.g. `["--ip", "1.2.3.4"]`).
    pub fn delete_decision(&self, args: &[&str]) {
        let mut a = vec!["decisions", "delete"];
        a.extend_from_slice(args);
        self.cscli(&a);
    }

    /// `cscli decisions import -i FILE.json` with `json` (an array of objects with `duration`,
    /// `origin`, `reason`, `scope`, `type`, `value`); `extra` is appended.
    pub fn import(&self, json: &str, extra: &[&str]) {
        let n = BOUNCERS.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("import-{n}.json"));
        std::fs::write(&path, json).expect("write import file");
        let p = path.to_string_lossy().into_owned();
        let mut a = vec!["decisions", "import", "-i", p.as_str()];
        a.extend_from_slice(extra);
        self.cscli(&a);
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

impl Drop for Lapi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The port-race guard: a listening socket is attributed to the process that holds it, and
    /// to no other (a child does not inherit it: std sockets are close-on-exec).
    #[test]
    fn a_listener_belongs_to_the_process_holding_it_only() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(listening_inode(port).is_some(), "found in /proc/net/tcp");
        assert!(owns_listener(std::process::id(), port));
        let mut other = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let theirs = owns_listener(other.id(), port);
        let _ = other.kill();
        let _ = other.wait();
        assert!(!theirs, "another process does not own our port");
        drop(listener);
        assert!(listening_inode(port).is_none(), "closed: nobody listens");
        assert!(!owns_listener(std::process::id(), port));
    }
}
