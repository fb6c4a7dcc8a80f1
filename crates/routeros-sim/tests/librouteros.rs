//! Third-party proof: the `routeros-sim` binary driven by Python `librouteros`.
//!
//! The Python script prints exactly what librouteros returned; this test asserts it. A missing
//! librouteros fails the test with an install hint: it is never skipped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_routeros-sim");

/// Starts the binary and returns it with the address from its `listening on ADDR` line.
fn start(extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--user",
            "tikban",
            "--password",
            "s3cret",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn routeros-sim");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("routeros-sim exited before `listening on`")
            .expect("read stdout");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_owned();
        }
    };
    (child, addr)
}

fn signal_and_wait(child: &mut Child, sig: &str) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let ok = Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "routeros-sim ignored {sig}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn librouteros_login_add_print_remove_and_duplicate() {
    let (mut child, addr) = start(&[]);
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/librouteros_check.py");
    let out = Command::new("python3")
        .args([script, host, port, "tikban", "s3cret"])
        .output()
        .expect("python3 must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(3),
        "librouteros is missing: pip install librouteros\n{stderr}"
    );
    assert!(out.status.success(), "librouteros script failed:\n{stderr}");
    let got: Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");

    // §4: v7 bad credentials → trap with this exact message.
    assert_eq!(
        got["bad_login"],
        json!({"message": "invalid user name or password (6)", "category": null})
    );
    // `add` returns the new .id (`!done =ret=*N`); ids are unique and increasing.
    assert_eq!(got["add_v4"], "*1");
    assert_eq!(got["add_v4_prefix"], "*2");
    assert_eq!(got["add_v4_other_list"], "*3");
    assert_eq!(got["add_v6"], "*4");
    // §9: duplicate → `failure: already have such entry`.
    assert_eq!(
        got["duplicate"],
        json!({"message": "failure: already have such entry", "category": null})
    );
    // §9 normalisation as librouteros sees it: /32 bare, prefix → network, v6 → /128.
    assert_eq!(
        got["print_v4"],
        json!([
            {".id": "*1", "list": "tikban", "address": "192.0.2.1", "dynamic": true,
             "disabled": false, "comment": "t1"},
            {".id": "*2", "list": "tikban", "address": "203.0.113.0/24", "dynamic": true,
             "disabled": false},
        ])
    );
    let timeouts = got["print_v4_timeout"].as_array().expect("array");
    assert_eq!(timeouts.len(), 1);
    assert!(
        ["1h", "59m59s", "59m58s"].contains(&timeouts[0].as_str().unwrap_or("")),
        "{timeouts:?}"
    );
    assert_eq!(
        got["print_v6"],
        json!([{".id": "*4", "list": "tikban", "address": "2001:db8::1/128", "dynamic": true,
                "disabled": false}])
    );
    assert_eq!(
        got["print_in"],
        json!(["192.0.2.1", "203.0.113.0/24", "198.51.100.9"])
    );
    // librouteros removes with `=.id=*1,*2`.
    assert_eq!(got["after_remove"], json!([]));
    assert_eq!(
        got["remove_missing"],
        json!({"message": "no such item", "category": 0})
    );
    assert_eq!(got["identity"], json!([{"name": "MikroTik"}]));
    assert_eq!(
        got["resource"],
        json!([{"version": "7.20.1 (stable)", "architecture-name": "arm64"}])
    );

    let status = signal_and_wait(&mut child, "-TERM");
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
}

#[test]
fn control_stdin_injects_log_lines_that_librouteros_reads() {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--user",
            "tikban",
            "--password",
            "s3cret",
        ])
        .arg("--control-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn routeros-sim");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || {
        lines
            .next()
            .expect("routeros-sim closed stdout")
            .expect("read stdout")
    };
    let addr = next()
        .strip_prefix("listening on ")
        .expect("first line is `listening on`")
        .to_owned();
    writeln!(
        stdin,
        "log system,error,critical login failure for user admin from 192.0.2.7 via ssh"
    )
    .unwrap();
    assert_eq!(next(), "ok *1");
    writeln!(stdin, "frobnicate").unwrap();
    assert!(next().starts_with("error unknown control command"));

    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/librouteros_log.py");
    let out = Command::new("python3")
        .args([script, host, port, "tikban", "s3cret"])
        .output()
        .expect("python3 must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(3),
        "pip install librouteros\n{stderr}"
    );
    assert!(out.status.success(), "librouteros script failed:\n{stderr}");
    let rows: Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");
    let rows = rows.as_array().expect("a list");
    // The injected line, then librouteros' own login (it lists the log right after logging in).
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][".id"], "*1");
    assert_eq!(rows[0]["topics"], "system,error,critical");
    assert_eq!(
        rows[0]["message"],
        "login failure for user admin from 192.0.2.7 via ssh"
    );
    assert_eq!(
        rows[1]["message"],
        "user tikban logged in from 127.0.0.1 via api"
    );
    let time = rows[0]["time"].as_str().expect("time");
    assert_eq!(
        (time.len(), &time[4..5], &time[10..11]),
        (19, "-", " "),
        "{time}"
    );

    drop(stdin);
    let status = signal_and_wait(&mut child, "-TERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigint_exits_zero_and_tls_prints_fingerprint() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--tls"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").expect("read");
    let fp = first
        .strip_prefix("tls sha256 fingerprint ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    assert_eq!(fp.len(), 64);
    assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
    let second = lines.next().expect("a line").expect("read");
    assert!(second.starts_with("listening on 127.0.0.1:"), "{second}");
    let status = signal_and_wait(&mut child, "-INT");
    assert_eq!(status.code(), Some(0), "SIGINT must exit 0");
}
