//! Peer-controlled text in errors and logs: escaped, bounded, and never carrying a secret.
//!
//! LAPI error bodies, decision fields and the configured URL reach error messages and log lines.
//! A `\n` in them would forge a log line, an ANSI escape would reach the terminal, a body that
//! echoes the request could print the API key, and a URL may carry a password. Everything
//! printed from outside goes through [`peer_text`] or [`redact_url`].

/// Longest piece of peer text an error or log line carries, in characters.
pub(crate) const MAX_PEER_TEXT: usize = 256;

/// `text` made safe to print: every occurrence of `secret` replaced by `<redacted>` (before
/// anything else, so the key cannot be cut in two), control and invisible characters escaped as
/// with [`char::escape_debug`] (quotes are left alone), and at most `max` characters, with `…`
/// when cut.
pub fn peer_text(text: &str, secret: Option<&str>, max: usize) -> String {
    let redacted;
    let text = match secret {
        Some(s) if !s.is_empty() && text.contains(s) => {
            redacted = text.replace(s, "<redacted>");
            redacted.as_str()
        }
        _ => text,
    };
    let mut out = String::with_capacity(text.len().min(max * 2));
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c == '"' || c == '\'' {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}

/// `url` with its user-info (`user:password@`) replaced by `<redacted>@`, escaped and bounded:
/// safe for any error message or log line.
///
/// ```
/// assert_eq!(
///     crowdsec_lapi::redact_url("http://bob:hunter2@lapi:8080/x"),
///     "http://<redacted>@lapi:8080/x"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let cut = match url.find("://") {
        Some(i) => i + 3,
        None => 0,
    };
    let (scheme, rest) = url.split_at(cut);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let shown = match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}<redacted>{}", &rest[at..]),
        None => url.to_owned(),
    };
    peer_text(&shown, None, MAX_PEER_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_length_is_bounded() {
        let t = peer_text("a\nINFO forged\u{1b}[31m\"q\"", None, 256);
        assert_eq!(t, "a\\nINFO forged\\u{1b}[31m\"q\"");
        assert!(!t.contains('\n') && !t.contains('\u{1b}'));
        let long = "x".repeat(1000);
        let t = peer_text(&long, None, 64);
        assert_eq!(t.chars().count(), 65);
        assert!(t.ends_with('…'));
    }

    #[test]
    fn the_secret_is_redacted_wherever_it_appears() {
        let t = peer_text(
            "key k3y-s3cr3t refused; k3y-s3cr3t",
            Some("k3y-s3cr3t"),
            256,
        );
        assert_eq!(t, "key <redacted> refused; <redacted>");
        assert_eq!(peer_text("plain", Some(""), 256), "plain");
    }

    #[test]
    fn url_user_info_is_redacted() {
        assert_eq!(
            redact_url("http://bob:PASSWORD@host/"),
            "http://<redacted>@host/"
        );
        assert_eq!(
            redact_url("https://u@h:1?a@b"),
            "https://<redacted>@h:1?a@b"
        );
        assert_eq!(redact_url("http://host/p@x"), "http://host/p@x");
        assert_eq!(redact_url("bob:pw@host"), "<redacted>@host");
        assert_eq!(redact_url("http://h/\n"), "http://h/\\n");
    }
}
