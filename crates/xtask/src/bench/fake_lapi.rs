//! A minimal local HTTP server standing in for LAPI at 1M decisions (LAPI 1.4.6 takes too long
//! to import them). It answers `startup=true` with a LAPI-shaped body generated on the fly (never
//! held in RAM, ≈138 B per decision like 1.4.6), and every later poll with an empty delta.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Result;

/// A running fake LAPI; the thread ends with the process.
pub struct FakeLapi {
    pub url: String,
}

/// Decision `i` as one element of `new`.
fn element(i: u32, out: &mut Vec<u8>) {
    let ip = std::net::Ipv4Addr::from(0x0A00_0000 + i);
    let _ = write!(
        out,
        r#"{{"duration":"167h59m{}s","id":{},"origin":"CAPI","scenario":"crowdsecurity/ssh-bf","scope":"Ip","type":"ban","value":"{ip}"}}"#,
        i % 60,
        1_000_000 + u64::from(i)
    );
}

/// Writes the `startup=true` body for `n` decisions to `w`; returns its length.
fn body(n: u32, w: &mut impl Write) -> std::io::Result<u64> {
    let mut len = 0u64;
    let mut buf = Vec::with_capacity(64 * 1024);
    buf.extend_from_slice(br#"{"deleted":null,"new":["#);
    for i in 0..n {
        if i > 0 {
            buf.push(b',');
        }
        element(i, &mut buf);
        if buf.len() >= 60 * 1024 {
            w.write_all(&buf)?;
            len += buf.len() as u64;
            buf.clear();
        }
    }
    buf.extend_from_slice(b"]}");
    w.write_all(&buf)?;
    len += buf.len() as u64;
    Ok(len)
}

/// Starts the server for `n` decisions on a free port.
pub fn start(n: u32) -> Result<FakeLapi> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let length = body(n, &mut std::io::sink())?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(conn, n, length);
            });
        }
    });
    Ok(FakeLapi {
        url: format!("http://{addr}"),
    })
}

/// One keep-alive connection: read a request head, answer, repeat.
fn serve(conn: TcpStream, n: u32, length: u64) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = BufWriter::with_capacity(64 * 1024, conn);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        if content_length > 0 {
            std::io::copy(
                &mut (&mut reader).take(content_length as u64),
                &mut std::io::sink(),
            )?;
        }
        let head = |len: u64| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            )
        };
        if request.contains("/v1/decisions/stream") && request.contains("startup=true") {
            w.write_all(head(length).as_bytes())?;
            body(n, &mut w)?;
        } else if request.contains("/v1/decisions/stream") {
            let empty = br#"{"deleted":null,"new":null}"#;
            w.write_all(head(empty.len() as u64).as_bytes())?;
            w.write_all(empty)?;
        } else {
            w.write_all(head(2).as_bytes())?;
            w.write_all(b"{}")?;
        }
        w.flush()?;
    }
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_lapi_shaped_json_of_about_138_bytes_per_decision() {
        let mut out = Vec::new();
        let len = body(1000, &mut out).unwrap();
        assert_eq!(len, out.len() as u64);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["new"].as_array().unwrap().len(), 1000);
        assert_eq!(v["new"][999]["value"], "10.0.3.231");
        let per = len / 1000;
        assert!((120..=160).contains(&per), "{per} B per decision");
    }
}
