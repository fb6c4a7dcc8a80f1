//! Login sentences (`docs/reference/routeros-api.md` §4).
//!
//! RouterOS 6.43+ and v7 take `/login =name= =password=` and answer `!done`. Older routers answer
//! that with `!done =ret=<hex challenge>`; the client then sends `=response=` computed by
//! [`legacy_response`]. go-routeros does the same: plain first, challenge on `=ret=`.

use md5::{Digest, Md5};
use thiserror::Error;

use crate::command::{Command, CommandError};

/// The challenge sent by a pre-6.43 router is not hex.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("login challenge is not an even-length hex string ({len} bytes received)")]
pub struct ChallengeError {
    /// Length of what arrived. The challenge itself is not repeated, to keep errors short.
    pub len: usize,
}

/// `/login =name=<user> =password=<password>` (v6.43+ and v7).
///
/// The password is sent in clear text; use api-ssl, or the container veth, which never leaves the
/// router. `Debug` on the result hides the password.
pub fn login_command(user: &str, password: &[u8]) -> Result<Command, CommandError> {
    Command::builder("/login")
        .attr("name", user)
        .attr("password", password)
        .build()
}

/// `/login =name=<user> =response=<response>`: the second step of the legacy challenge login.
pub fn legacy_login_command(user: &str, response: &str) -> Result<Command, CommandError> {
    Command::builder("/login")
        .attr("name", user)
        .attr("response", response)
        .build()
}

/// The legacy challenge response: `"00" + hex(md5(0x00 ‖ password ‖ unhex(challenge)))`.
pub fn legacy_response(challenge_hex: &[u8], password: &[u8]) -> Result<String, ChallengeError> {
    let challenge = unhex(challenge_hex).ok_or(ChallengeError {
        len: challenge_hex.len(),
    })?;
    let mut md5 = Md5::new();
    md5.update([0u8]);
    md5.update(password);
    md5.update(&challenge);
    let digest = md5.finalize();
    let mut out = String::with_capacity(34);
    out.push_str("00");
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0F)]));
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of `docs/reference/routeros-api.md` §4.
    #[test]
    fn legacy_response_matches_reference_vectors() {
        let vectors = [
            ("abc123", "passTest", "0021277bff9ac7caf06aa608e46616d47f"),
            (
                "93b438ec9b80057c06dd9fe67d56aa9a",
                "",
                "00e134102a9d330dd7b1849fedfea3cb57",
            ),
            (
                "856780b7411eefd3abadee2058c149a3",
                "",
                "005062f7a5ef124d34675bf3e81f56c556",
            ),
        ];
        for (challenge, password, want) in vectors {
            assert_eq!(
                legacy_response(challenge.as_bytes(), password.as_bytes()).unwrap(),
                want
            );
        }
    }

    #[test]
    fn upper_case_challenge_is_accepted() {
        assert_eq!(
            legacy_response(b"ABC123", b"passTest").unwrap(),
            "0021277bff9ac7caf06aa608e46616d47f"
        );
    }

    #[test]
    fn rejects_non_hex_challenge() {
        assert_eq!(legacy_response(b"abc", b""), Err(ChallengeError { len: 3 }));
        assert_eq!(legacy_response(b"zz", b""), Err(ChallengeError { len: 2 }));
    }

    #[test]
    fn login_command_matches_reference_bytes_and_hides_password_in_debug() {
        let cmd = login_command("admin", b"").unwrap();
        let mut bytes = Vec::new();
        cmd.encode(&mut bytes);
        // docs/reference/routeros-api.md §1.2.
        assert_eq!(bytes, b"\x06/login\x0b=name=admin\x0a=password=\x00");
        let secret = login_command("admin", b"s3cr3t-pw").unwrap();
        let dbg = format!("{secret:?}");
        assert!(!dbg.contains("s3cr3t-pw"), "{dbg}");
        let dbg = format!("{:?}", legacy_login_command("admin", "00abcdef").unwrap());
        assert!(!dbg.contains("abcdef"), "{dbg}");
    }
}
