//! IP networks as operators write them (`192.0.2.0/24`, `2001:db8::/32`,
//! bare addresses), with the strictness a security tool needs: a prefix with
//! host bits set is an error that says what was probably meant.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use shield_common::addr::{apply_mask, is_network, v4_mask, v6_mask};

/// An IPv4 or IPv6 network: address plus prefix length, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address or CIDR")]
    Syntax(String),
    #[error("prefix length /{len} is too long for {family} (max /{max}) in `{text}`")]
    PrefixTooLong {
        text: String,
        len: u32,
        family: &'static str,
        max: u32,
    },
    #[error("`{text}` has host bits set; did you mean `{suggestion}`?")]
    HostBits { text: String, suggestion: Cidr },
}

impl Cidr {
    /// A network; fails when `addr` has bits set past `len`.
    pub fn new(addr: IpAddr, len: u8) -> Result<Cidr, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if u32::from(len) > max {
            return Err(CidrError::PrefixTooLong {
                text: format!("{addr}/{len}"),
                len: len.into(),
                family: family_name(&addr),
                max,
            });
        }
        let c = Cidr { addr, len };
        if !c.is_network() {
            return Err(CidrError::HostBits {
                text: format!("{addr}/{len}"),
                suggestion: Cidr::truncating(addr, len),
            });
        }
        Ok(c)
    }

    /// The network containing `addr` at `len` (host bits cleared).
    pub fn truncating(addr: IpAddr, len: u8) -> Cidr {
        match addr {
            IpAddr::V4(a) => {
                let len = len.min(32);
                let m = apply_mask(a.octets(), &v4_mask(len.into()));
                Cidr {
                    addr: IpAddr::V4(Ipv4Addr::from(m)),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = len.min(128);
                let m = apply_mask(a.octets(), &v6_mask(len.into()));
                Cidr {
                    addr: IpAddr::V6(Ipv6Addr::from(m)),
                    len,
                }
            }
        }
    }

    /// A single host (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The broadest prefix shield blocks without being told that it means
    /// it (a feed's `allow_broad`): a /8 of IPv4, a /16 of IPv6. Broader
    /// would black-hole whole regions of the Internet; `shieldctl ban`
    /// refuses it outright.
    pub fn broadest_blocked(&self) -> u8 {
        if self.is_v4() { 8 } else { 16 }
    }

    /// Broader than [`Cidr::broadest_blocked`].
    pub fn is_broad(&self) -> bool {
        self.len < self.broadest_blocked()
    }

    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The family's full length: 32 or 128.
    pub fn max_len(&self) -> u8 {
        if self.is_v4() { 32 } else { 128 }
    }

    pub fn is_host(&self) -> bool {
        self.len == self.max_len()
    }

    /// True when `self` contains `other` (same family, shorter or equal prefix).
    pub fn contains(&self, other: &Cidr) -> bool {
        if self.is_v4() != other.is_v4() || self.len > other.len {
            return false;
        }
        Cidr::truncating(other.addr, self.len).addr == self.addr
    }

    /// The network's last address (every host bit set).
    pub fn last(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let m = v4_mask(self.len.into());
                let o = a.octets();
                IpAddr::V4(Ipv4Addr::from(std::array::from_fn::<u8, 4, _>(|i| {
                    o[i] | !m[i]
                })))
            }
            IpAddr::V6(a) => {
                let m = v6_mask(self.len.into());
                let o = a.octets();
                IpAddr::V6(Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|i| {
                    o[i] | !m[i]
                })))
            }
        }
    }

    /// Network-order bytes for v4 maps; `None` for v6.
    pub fn v4_octets(&self) -> Option<[u8; 4]> {
        match self.addr {
            IpAddr::V4(a) => Some(a.octets()),
            IpAddr::V6(_) => None,
        }
    }

    /// Network-order bytes for v6 maps; `None` for v4.
    pub fn v6_octets(&self) -> Option<[u8; 16]> {
        match self.addr {
            IpAddr::V6(a) => Some(a.octets()),
            IpAddr::V4(_) => None,
        }
    }

    fn is_network(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => is_network(a.octets(), self.len.into()),
            IpAddr::V6(a) => is_network(a.octets(), self.len.into()),
        }
    }
}

fn family_name(a: &IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Splits `text` (already trimmed) into an address and an optional prefix
/// length, with the syntax checks `FromStr` and `parse_normalizing` share.
/// Allocates only when it fails.
fn parse_parts(text: &str) -> Result<(IpAddr, Option<u8>), CidrError> {
    let Some((a, l)) = text.split_once('/') else {
        let addr: IpAddr = text.parse().map_err(|_| CidrError::Syntax(text.into()))?;
        return Ok((addr, None));
    };
    let addr: IpAddr = a.parse().map_err(|_| CidrError::Syntax(text.into()))?;
    // Digits only and at most three of them: `+8`, `0008` and `8/8` are typos,
    // not lengths.
    if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CidrError::Syntax(text.into()));
    }
    let len: u32 = l.parse().map_err(|_| CidrError::Syntax(text.into()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(CidrError::PrefixTooLong {
            text: text.into(),
            len,
            family: family_name(&addr),
            max,
        });
    }
    // len <= 128 was just checked, so it fits.
    Ok((addr, Some(len as u8)))
}

impl Cidr {
    /// Like `FromStr`, but a prefix with host bits set is accepted as its
    /// network instead of refused. The flag says whether that happened.
    ///
    /// Threat feeds are machine-written and sometimes sloppy (`1.2.3.4/24`);
    /// refusing such a line would leave the network it names unblocked, while
    /// an operator's config deserves the strict error.
    pub fn parse_normalizing(s: &str) -> Result<(Cidr, bool), CidrError> {
        let text = s.trim();
        Ok(match parse_parts(text)? {
            (addr, None) => (Cidr::host(addr), false),
            (addr, Some(len)) => {
                let c = Cidr::truncating(addr, len);
                (c, c.addr != addr)
            }
        })
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let text = s.trim();
        match parse_parts(text)? {
            (addr, None) => Ok(Cidr::host(addr)),
            (addr, Some(len)) => Cidr::new(addr, len).map_err(|e| match e {
                CidrError::HostBits { suggestion, .. } => CidrError::HostBits {
                    text: text.into(),
                    suggestion,
                },
                other => other,
            }),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Serialized as its text form (`192.0.2.0/24`), so journals and the
/// control protocol stay readable and are re-validated when read back.
impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_hosts() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(c.prefix_len(), 8);
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let h: Cidr = "192.0.2.7".parse().unwrap();
        assert!(h.is_host());
        assert_eq!(h.to_string(), "192.0.2.7/32");
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(!v6.is_v4());
        assert_eq!(" 2001:db8::1 ".parse::<Cidr>().unwrap().prefix_len(), 128);
    }

    #[test]
    fn last_address_sets_every_host_bit() {
        let last = |s: &str| s.parse::<Cidr>().unwrap().last().to_string();
        assert_eq!(last("10.0.0.0/8"), "10.255.255.255");
        assert_eq!(last("192.0.2.7"), "192.0.2.7");
        assert_eq!(last("2001:db8:a::/64"), "2001:db8:a:0:ffff:ffff:ffff:ffff");
        assert_eq!(last("2001:db8::/127"), "2001:db8::1");
    }

    #[test]
    fn host_bits_suggest_the_network() {
        let e = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`10.1.2.3/8` has host bits set; did you mean `10.0.0.0/8`?"
        );
        let e = "2001:db8::1/64".parse::<Cidr>().unwrap_err();
        assert!(
            e.to_string().contains("did you mean `2001:db8::/64`"),
            "{e}"
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "/",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/+8",
            "1.2.3",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/0008",
            "hello",
            "10.0.0.0/8/8",
            "1.2.3.4 5",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong {
                len: 33,
                max: 32,
                ..
            })
        ));
    }

    #[test]
    fn normalizing_parse_accepts_host_bits_and_says_so() {
        let (c, fixed) = Cidr::parse_normalizing("10.1.2.3/8").unwrap();
        assert_eq!((c.to_string().as_str(), fixed), ("10.0.0.0/8", true));
        let (c, fixed) = Cidr::parse_normalizing("2001:db8::1/64").unwrap();
        assert_eq!((c.to_string().as_str(), fixed), ("2001:db8::/64", true));
        let (c, fixed) = Cidr::parse_normalizing("10.0.0.0/8").unwrap();
        assert_eq!((c.to_string().as_str(), fixed), ("10.0.0.0/8", false));
        let (c, fixed) = Cidr::parse_normalizing(" 192.0.2.7 ").unwrap();
        assert_eq!((c.to_string().as_str(), fixed), ("192.0.2.7/32", false));
        // Everything else stays as strict as `FromStr`.
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "1.2.3",
            "10.0.0.0/0008",
            "",
        ] {
            assert!(Cidr::parse_normalizing(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn containment() {
        let a: Cidr = "10.0.0.0/8".parse().unwrap();
        let b: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(a.contains(&b));
        assert!(!b.contains(&a));
        assert!(a.contains(&a));
        assert!(!a.contains(&"::/0".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(&b));
    }
}
