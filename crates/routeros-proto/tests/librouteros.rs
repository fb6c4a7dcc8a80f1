//! Cross-check against an independent implementation: Python `librouteros` (installed by
//! `.ci/run` from PyPI). It encodes sentences our decoder must read identically, and decodes what
//! our encoder writes. librouteros has no 5-byte length form (`docs/reference/routeros-api.md` §1.1), so that
//! form is covered by the reference vectors in `src/length.rs` instead.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use routeros_proto::{Decoder, Limits, Sentence};
use serde_json::{Value, json};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/librouteros_xcheck.py")
}

fn python(mode: &str, input: &Value) -> Value {
    let mut child = Command::new("python3")
        .arg(script())
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (see .ci/run)");
    let mut stdin = child.stdin.take().unwrap();
    let payload = serde_json::to_vec(input).unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&payload));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "librouteros helper failed; is librouteros installed (`pip install librouteros`)?\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sentences that cover every prefix form librouteros has (1 to 4 bytes, including the 256 → `81
/// 00` pitfall), non-ASCII and non-UTF-8 bytes, `=` inside values, and empty values.
fn corpus() -> Vec<Sentence> {
    let mut all_bytes: Vec<u8> = (1..=255).collect();
    all_bytes.push(0);
    let w = |s: &str| s.as_bytes().to_vec();
    vec![
        Sentence::new(vec![w("/login"), w("=name=admin"), w("=password=")]),
        Sentence::new(vec![w("!done"), w("=ret=*1A"), w(".tag=7")]),
        Sentence::new(vec![
            w("!re"),
            w("=comment=zażółć gęślą jaźń"),
            w("=x=a=b=c"),
            [b"=bin=".to_vec(), all_bytes].concat(),
        ]),
        Sentence::new(vec![w("!re"), noise(1, 127), noise(2, 128), noise(3, 256)]),
        Sentence::new(vec![w("!re"), noise(4, 0x3FFF), noise(5, 0x4000)]),
        Sentence::new(vec![w("!re"), noise(6, 0x1F_FFFF)]),
        Sentence::new(vec![w("!re"), noise(7, 0x20_0000 + 5)]),
        Sentence::new(vec![w("!trap"), w("=category=1"), w("=message=caf\u{e9}")]),
        Sentence::new(vec![w("!empty"), w(".tag=abc")]),
    ]
}

fn limits() -> Limits {
    Limits {
        max_word: 4 << 20,
        max_sentence: 8 << 20,
        max_words: 16,
    }
}

#[test]
fn our_decoder_reads_what_librouteros_encodes() {
    let sentences = corpus();
    let input: Vec<Vec<String>> = sentences
        .iter()
        .map(|s| s.words().iter().map(|w| hex(w)).collect())
        .collect();
    let out = python("encode", &json!(input));
    let bytes = unhex(out["bytes"].as_str().unwrap());

    let mut ours = Vec::new();
    for s in &sentences {
        s.encode(&mut ours);
    }
    assert_eq!(
        bytes, ours,
        "librouteros and routeros-proto encode differently"
    );

    // Odd chunk sizes so prefixes and words are split across feeds.
    let mut dec = Decoder::new(limits());
    let mut got = Vec::new();
    for chunk in bytes.chunks(4093) {
        dec.feed(chunk);
        while let Some(s) = dec.poll_sentence().unwrap() {
            got.push(s);
        }
    }
    assert_eq!(got, sentences);
}

#[test]
fn librouteros_reads_what_our_encoder_writes() {
    let sentences = corpus();
    let mut bytes = Vec::new();
    for s in &sentences {
        s.encode(&mut bytes);
    }
    let out = python("decode", &json!({ "bytes": hex(&bytes) }));
    let decoded: Vec<Vec<Vec<u8>>> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|w| unhex(w.as_str().unwrap()))
                .collect()
        })
        .collect();
    let want: Vec<Vec<Vec<u8>>> = sentences.into_iter().map(Sentence::into_words).collect();
    assert_eq!(decoded.len(), want.len());
    for (i, (got, want)) in decoded.iter().zip(&want).enumerate() {
        assert_eq!(
            got, want,
            "sentence {i} differs after librouteros decoded it"
        );
    }
}

#[test]
fn librouteros_reads_a_built_command() {
    let cmd = routeros_proto::Command::builder("/ip/firewall/address-list/add")
        .attr("list", "crowdsec-banned")
        .attr("address", "2001:db8::1")
        .attr("comment", b"tikban \xe9t\xe9")
        .tag("42")
        .build()
        .unwrap();
    let mut bytes = Vec::new();
    cmd.encode(&mut bytes);
    let out = python("decode", &json!({ "bytes": hex(&bytes) }));
    let words: Vec<Vec<u8>> = out[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| unhex(w.as_str().unwrap()))
        .collect();
    assert_eq!(words, cmd.to_sentence().into_words());
}
