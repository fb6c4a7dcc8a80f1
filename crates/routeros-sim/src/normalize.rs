//! Address normalisation of `/ip/firewall/address-list` and `/ipv6/firewall/address-list`
//! (`docs/reference/routeros-api.md` §9, table "Normalisation").
//!
//! Pure functions: text in, stored text out. Every row of the §9 table is a unit test below.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::state::Family;

/// What kind of value an address-list entry holds after normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// A single host (`192.0.2.1`, or `2001:db8::1/128` on IPv6).
    Host,
    /// A network prefix (`203.0.113.0/24`).
    Prefix,
    /// An IPv4 range that is not an exact prefix (`198.51.100.1-198.51.100.7`).
    Range,
    /// Anything else: the router keeps the text as a DNS name to resolve (§9 "silently stored as
    /// a DNS name"). The sim resolves it only through the table tests set with
    /// [`Sim::set_dns`](crate::Sim::set_dns); it never touches the network.
    DnsName,
}

/// A normalised address: the text the router stores and prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// Stored and printed text.
    pub text: String,
    /// What the text denotes.
    pub kind: AddressKind,
}

/// Normalises `input` for the `family` list, or returns the router's trap message.
///
/// §9 is followed literally: non-address text is "silently stored as a DNS name" entry. The one
/// documented refusal is an IPv6 range on `/ipv6` (`failure: <input> is not a valid dns name`);
/// the sim refuses any `/ipv6` text with a `:` that is not an address or prefix the same way,
/// and empty text on both families. That generalisation is **unverified**.
pub fn normalize(family: Family, input: &str) -> Result<Normalized, String> {
    let parsed = match family {
        Family::V4 => normalize_v4(input),
        Family::V6 => normalize_v6(input),
    };
    if let Some(n) = parsed {
        return Ok(n);
    }
    let refused = input.is_empty() || (family == Family::V6 && input.contains(':'));
    if refused {
        return Err(format!("failure: {input} is not a valid dns name"));
    }
    Ok(Normalized {
        text: input.to_owned(),
        kind: AddressKind::DnsName,
    })
}

fn normalize_v4(input: &str) -> Option<Normalized> {
    if let Some((addr, len)) = input.split_once('/') {
        let addr: Ipv4Addr = addr.parse().ok()?;
        let len: u8 = parse_prefix_len(len, 32)?;
        return Some(v4_prefix(addr, len));
    }
    if let Some((a, b)) = input.split_once('-') {
        let a: Ipv4Addr = a.parse().ok()?;
        let b: Ipv4Addr = b.parse().ok()?;
        let (lo, hi) = (u32::from(a), u32::from(b));
        // An exact prefix is stored as the prefix (§9: `198.51.100.0-198.51.100.255` → /24).
        if lo <= hi {
            let size = u64::from(hi - lo) + 1;
            if size.is_power_of_two() && u64::from(lo) % size == 0 {
                let len = 32 - size.trailing_zeros() as u8;
                return Some(v4_prefix(a, len));
            }
        }
        // Other ranges stay ranges (§9). A reversed range is kept as typed (**unverified**).
        return Some(Normalized {
            text: format!("{a}-{b}"),
            kind: AddressKind::Range,
        });
    }
    let addr: Ipv4Addr = input.parse().ok()?;
    Some(Normalized {
        text: addr.to_string(),
        kind: AddressKind::Host,
    })
}

fn v4_prefix(addr: Ipv4Addr, len: u8) -> Normalized {
    if len == 32 {
        // "a /32 prints bare" (§9, manual example).
        return Normalized {
            text: addr.to_string(),
            kind: AddressKind::Host,
        };
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let net = Ipv4Addr::from(u32::from(addr) & mask);
    Normalized {
        text: format!("{net}/{len}"),
        kind: AddressKind::Prefix,
    }
}

fn normalize_v6(input: &str) -> Option<Normalized> {
    let (addr, len) = match input.split_once('/') {
        Some((addr, len)) => (addr, parse_prefix_len(len, 128)?),
        None => (input, 128),
    };
    let addr: Ipv6Addr = addr.parse().ok()?;
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    let net = Ipv6Addr::from(u128::from(addr) & mask);
    // A bare IPv6 address becomes /128 (§9); Rust prints RFC 5952 lower-case compressed text.
    Some(Normalized {
        text: format!("{net}/{len}"),
        kind: if len == 128 {
            AddressKind::Host
        } else {
            AddressKind::Prefix
        },
    })
}

fn parse_prefix_len(text: &str, max: u8) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&n| n <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Result<Normalized, String> {
        normalize(Family::V4, s)
    }
    fn v6(s: &str) -> Result<Normalized, String> {
        normalize(Family::V6, s)
    }

    #[test]
    fn slash_32_is_stored_bare() {
        assert_eq!(v4("192.0.34.166/32").unwrap().text, "192.0.34.166");
        assert_eq!(v4("192.0.34.166/32").unwrap().kind, AddressKind::Host);
    }

    #[test]
    fn prefix_is_stored_as_network_address() {
        let n = v4("203.0.113.77/24").unwrap();
        assert_eq!(n.text, "203.0.113.0/24");
        assert_eq!(n.kind, AddressKind::Prefix);
        assert_eq!(v4("10.1.2.3/0").unwrap().text, "0.0.0.0/0");
    }

    #[test]
    fn exact_prefix_range_becomes_prefix() {
        let n = v4("198.51.100.0-198.51.100.255").unwrap();
        assert_eq!(n.text, "198.51.100.0/24");
        assert_eq!(n.kind, AddressKind::Prefix);
    }

    #[test]
    fn other_ipv4_ranges_stay_ranges() {
        let n = v4("198.51.100.1-198.51.100.7").unwrap();
        assert_eq!(n.text, "198.51.100.1-198.51.100.7");
        assert_eq!(n.kind, AddressKind::Range);
    }

    #[test]
    fn bare_ipv6_becomes_slash_128() {
        let n = v6("2001:db8::1").unwrap();
        assert_eq!(n.text, "2001:db8::1/128");
        assert_eq!(n.kind, AddressKind::Host);
        assert_eq!(v6("2001:DB8:0:0::1").unwrap().text, "2001:db8::1/128");
        assert_eq!(v6("2001:db8::1:2:3:4/64").unwrap().text, "2001:db8::/64");
    }

    #[test]
    fn ipv6_range_is_rejected_as_invalid_dns_name() {
        assert_eq!(
            v6("2001:db8::1-2001:db8::5"),
            Err("failure: 2001:db8::1-2001:db8::5 is not a valid dns name".to_owned())
        );
    }

    #[test]
    fn non_address_text_is_stored_as_dns_name() {
        for text in ["203.0.113.1-254", "example.com", "1.2.3.4/33", "300.1.1.1"] {
            let n = v4(text).unwrap();
            assert_eq!(n.text, text);
            assert_eq!(n.kind, AddressKind::DnsName, "{text}");
        }
        assert_eq!(v6("host.example").unwrap().kind, AddressKind::DnsName);
    }
}
