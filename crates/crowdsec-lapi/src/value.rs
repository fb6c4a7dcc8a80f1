//! Canonical decision values: one IP address or one network.
//!
//! LAPI keeps `value` verbatim (`docs/reference/crowdsec-lapi.md` §5, "value quirks", all seen on 1.4.6):
//! upper-case IPv6 (`2001:DB8::ABCD`), host bits set (`192.0.2.77/24`), IPv4-mapped IPv6
//! (`::ffff:192.0.2.55`), and 1.4.6 import stores CIDRs with scope `Ip`. So address versus
//! network is decided from the value (a `/` present), never from the scope, and all state is keyed
//! on the canonical form built here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A canonical IP address or network, 18 bytes, `Copy`.
///
/// Invariants (kept by every constructor): networks have no host bits; a `/32` or `/128`
/// network is a host; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, or a network of prefix ≥ 96
/// inside `::ffff:0:0/96`) is stored as IPv4. Two values are equal exactly when RouterOS would
/// store the same address-list entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    repr: Repr,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    V4(Ipv4Addr),
    Net4(Ipv4Addr, u8),
    V6(Ipv6Addr),
    Net6(Ipv6Addr, u8),
}

/// Why a decision value is not an IP address or CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The text is not an IPv4/IPv6 address or `address/prefix`.
    #[error("value {input:?} is not an IP address or CIDR network")]
    NotAnIp {
        /// The input, truncated to 64 bytes.
        input: String,
    },
    /// The prefix length is not a number in range for the address family.
    #[error("value {input:?}: prefix length must be 0..={max}")]
    BadPrefix {
        /// The input, truncated to 64 bytes.
        input: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

fn truncated(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Value {
    /// Parses and canonicalises a LAPI value.
    ///
    /// ```
    /// use crowdsec_lapi::Value;
    /// assert_eq!(Value::parse("2001:DB8::ABCD").unwrap().to_string(), "2001:db8::abcd");
    /// assert_eq!(Value::parse("192.0.2.77/24").unwrap().to_string(), "192.0.2.0/24");
    /// assert_eq!(Value::parse("::ffff:192.0.2.55").unwrap().to_string(), "192.0.2.55");
    /// assert_eq!(Value::parse("192.0.2.1/32").unwrap().to_string(), "192.0.2.1");
    /// assert!(Value::parse("bob").is_err());
    /// ```
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let not_ip = || ValueError::NotAnIp {
            input: truncated(input),
        };
        let (addr_text, prefix_text) = match input.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (input, None),
        };
        let addr = IpAddr::from_str(addr_text).map_err(|_| not_ip())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ValueError::BadPrefix {
                        input: truncated(input),
                        max,
                    });
                }
                // At most three ASCII digits: fits u16.
                let n: u16 = p.parse().map_err(|_| not_ip())?;
                if n > u16::from(max) {
                    return Err(ValueError::BadPrefix {
                        input: truncated(input),
                        max,
                    });
                }
                n as u8
            }
        };
        Ok(Self::network_unchecked(addr, prefix))
    }

    /// A single host address (IPv4-mapped IPv6 becomes IPv4).
    pub fn from_ip(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Value { repr: Repr::V4(a) },
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Value { repr: Repr::V4(v4) },
                None => Value { repr: Repr::V6(a) },
            },
        }
    }

    /// A network; host bits are masked off. Fails when `prefix` exceeds the family's width.
    pub fn network(addr: IpAddr, prefix: u8) -> Result<Self, ValueError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(ValueError::BadPrefix {
                input: format!("{addr}/{prefix}"),
                max,
            });
        }
        Ok(Self::network_unchecked(addr, prefix))
    }

    /// `prefix` must be within the family's width.
    fn network_unchecked(addr: IpAddr, prefix: u8) -> Self {
        match addr {
            IpAddr::V4(a) => Self::net4(a, prefix),
            IpAddr::V6(a) => {
                let masked = mask6(a, prefix);
                if prefix >= 96 {
                    if let Some(v4) = masked.to_ipv4_mapped() {
                        return Self::net4(v4, prefix - 96);
                    }
                }
                if prefix == 128 {
                    Value {
                        repr: Repr::V6(masked),
                    }
                } else {
                    Value {
                        repr: Repr::Net6(masked, prefix),
                    }
                }
            }
        }
    }

    fn net4(a: Ipv4Addr, prefix: u8) -> Self {
        if prefix >= 32 {
            return Value { repr: Repr::V4(a) };
        }
        let bits = u32::from(a);
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Value {
            repr: Repr::Net4(Ipv4Addr::from(bits & mask), prefix),
        }
    }

    /// The address (the network address for a network).
    pub fn addr(&self) -> IpAddr {
        match self.repr {
            Repr::V4(a) | Repr::Net4(a, _) => IpAddr::V4(a),
            Repr::V6(a) | Repr::Net6(a, _) => IpAddr::V6(a),
        }
    }

    /// The IPv4 host address when this is one (the cache's compact fast path).
    pub fn as_v4_host(&self) -> Option<Ipv4Addr> {
        match self.repr {
            Repr::V4(a) => Some(a),
            _ => None,
        }
    }

    /// Prefix length: 32 or 128 for hosts.
    pub fn prefix_len(&self) -> u8 {
        match self.repr {
            Repr::V4(_) => 32,
            Repr::V6(_) => 128,
            Repr::Net4(_, p) | Repr::Net6(_, p) => p,
        }
    }

    /// True for IPv6 values (they belong on `/ipv6/firewall/address-list`).
    pub fn is_ipv6(&self) -> bool {
        matches!(self.repr, Repr::V6(_) | Repr::Net6(..))
    }

    /// True for networks (prefix shorter than the family's width).
    pub fn is_network(&self) -> bool {
        matches!(self.repr, Repr::Net4(..) | Repr::Net6(..))
    }
}

fn mask6(a: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let bits = u128::from(a);
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    };
    Ipv6Addr::from(bits & mask)
}

impl fmt::Display for Value {
    /// Canonical text: `192.0.2.1`, `192.0.2.0/24`, `2001:db8::1`, `2001:db8::/32` (IPv6 in RFC 5952
    /// lower-case compressed form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.repr {
            Repr::V4(a) => write!(f, "{a}"),
            Repr::V6(a) => write!(f, "{a}"),
            Repr::Net4(a, p) => write!(f, "{a}/{p}"),
            Repr::Net6(a, p) => write!(f, "{a}/{p}"),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({self})")
    }
}

impl FromStr for Value {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Value::parse(s)
    }
}

impl From<IpAddr> for Value {
    fn from(a: IpAddr) -> Self {
        Value::from_ip(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> String {
        Value::parse(s).unwrap().to_string()
    }

    #[test]
    fn canonicalises_the_quirks_seen_on_1_4_6() {
        assert_eq!(c("2001:DB8::ABCD"), "2001:db8::abcd");
        assert_eq!(c("192.0.2.77/24"), "192.0.2.0/24");
        assert_eq!(c("::ffff:192.0.2.55"), "192.0.2.55");
        assert_eq!(c("::FFFF:C000:0237"), "192.0.2.55");
    }

    #[test]
    fn host_prefixes_become_plain_addresses() {
        assert_eq!(c("192.0.34.166/32"), "192.0.34.166");
        assert_eq!(c("2001:db8::1/128"), "2001:db8::1");
        assert!(!Value::parse("192.0.34.166/32").unwrap().is_network());
        assert_eq!(c("::ffff:192.0.2.55/128"), "192.0.2.55");
    }

    #[test]
    fn ipv6_networks_are_masked_and_compressed() {
        assert_eq!(c("2001:DB8:0:0:1:0:0:1/64"), "2001:db8::/64");
        assert_eq!(c("2001:0db8:0000:0000:0000:0000:0000:0001"), "2001:db8::1");
        assert_eq!(c("::/0"), "::/0");
        assert_eq!(c("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(c("10.1.2.3/8"), "10.0.0.0/8");
    }

    #[test]
    fn mapped_networks_unmap_only_inside_the_mapped_block() {
        assert_eq!(c("::ffff:192.0.2.0/120"), "192.0.2.0/24");
        assert_eq!(c("::ffff:192.0.2.0/96"), "0.0.0.0/0");
        // A /95 reaches outside ::ffff:0:0/96: it stays IPv6.
        assert!(Value::parse("::ffff:192.0.2.0/95").unwrap().is_ipv6());
    }

    #[test]
    fn rejects_everything_that_is_not_an_ip_or_cidr() {
        for bad in [
            "",
            "bob",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
            "1.2.3.4/8/8",
            "::1/129",
            "fe80::1%eth0",
            " 1.2.3.4",
            "1.2.3.4 ",
            "198.51.100.0-198.51.100.255",
            "2001:db8::1-2001:db8::5",
            "FR",
            "AS1234",
            "1.2.3.4/0x8",
            "1.2.3.4/0008",
        ] {
            assert!(Value::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn value_is_small() {
        assert!(std::mem::size_of::<Value>() <= 18);
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
            any::<u128>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
            any::<u32>().prop_map(|b| IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped())),
        ]
    }

    proptest! {
        #[test]
        fn canonical_text_is_a_fixed_point(ip in arb_ip(), p in 0u8..=128, upper: bool) {
            let p = if ip.is_ipv4() { p % 33 } else { p };
            let text = format!("{ip}/{p}");
            let text = if upper { text.to_uppercase() } else { text };
            let v = Value::parse(&text).unwrap();
            let again = Value::parse(&v.to_string()).unwrap();
            prop_assert_eq!(v, again);
            prop_assert_eq!(v.to_string(), again.to_string());
            prop_assert_eq!(v.to_string(), v.to_string().to_lowercase());
        }

        #[test]
        fn networks_contain_the_original_address_and_have_no_host_bits(ip in arb_ip(), p in 0u8..=128) {
            let p = if ip.is_ipv4() { p % 33 } else { p };
            let v = Value::network(ip, p).unwrap();
            let len = v.prefix_len();
            match (v.addr(), ip) {
                (IpAddr::V4(net), IpAddr::V4(orig)) => {
                    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                    prop_assert_eq!(u32::from(net) & !mask, 0);
                    prop_assert_eq!(u32::from(orig) & mask, u32::from(net));
                }
                (IpAddr::V4(net), IpAddr::V6(orig)) => {
                    // Unmapped: the original was inside ::ffff:0:0/96.
                    prop_assert!(orig.to_ipv4_mapped().is_some());
                    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                    prop_assert_eq!(u32::from(net) & !mask, 0);
                }
                (IpAddr::V6(net), IpAddr::V6(orig)) => {
                    let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
                    prop_assert_eq!(u128::from(net) & !mask, 0);
                    prop_assert_eq!(u128::from(orig) & mask, u128::from(net));
                }
                (IpAddr::V6(_), IpAddr::V4(_)) => prop_assert!(false, "v4 became v6"),
            }
        }

        #[test]
        fn hosts_never_print_a_prefix(ip in arb_ip()) {
            let v = Value::from_ip(ip);
            prop_assert!(!v.to_string().contains('/'));
            prop_assert_eq!(Value::parse(&v.to_string()).unwrap(), v);
        }

        #[test]
        fn never_panics_on_arbitrary_text(s in "\\PC{0,60}") {
            let _ = Value::parse(&s);
        }

        #[test]
        fn never_panics_on_ip_like_text(s in "[0-9a-fA-F:.]{0,45}(/[0-9]{0,4})?") {
            if let Ok(v) = Value::parse(&s) {
                prop_assert_eq!(Value::parse(&v.to_string()).unwrap(), v);
            }
        }
    }
}
