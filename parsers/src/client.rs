//! Who is the client: `downstream_remote_address` or the trusted X-Forwarded-For hop.
//!
//! Istio gateways run Envoy with `use_remote_address: true` and
//! `xff_num_trusted_hops = gatewayTopology.numTrustedProxies` (default 0). Envoy then appends the
//! address it trusts as the client's (`%DOWNSTREAM_REMOTE_ADDRESS%`, which with PROXY protocol is
//! the address the NLB saw) as the **right-most** X-Forwarded-For entry. Anything left of it was
//! sent by the client and can be forged. See Envoy's
//! [x-forwarded-for docs](https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/headers#x-forwarded-for)
//! and `Envoy::Http::Utility::getLastAddressFromXFF`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use strum::{IntoStaticStr, VariantNames};
use thiserror::Error;

use crate::AccessRecord;

/// Where the client address is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAddressSource {
    /// `%DOWNSTREAM_REMOTE_ADDRESS%` (the default; correct for PROXY-protocol gateways).
    #[default]
    DownstreamRemote,
    /// The X-Forwarded-For entry `trusted_hops` positions from the right of the logged header
    /// (0 = right-most, i.e. the address Envoy appended). Matches Envoy's `xff_num_trusted_hops`
    /// when vpslens is told the same number of trusted proxies as the gateway.
    XForwardedFor {
        /// Number of trusted proxies in front of the logging Envoy.
        trusted_hops: u8,
    },
}

/// Why no client address could be found. The `reason` label values ([`Self::reason`], in
/// declaration order as [`Self::REASONS`]) come from the strum attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error, IntoStaticStr, VariantNames)]
pub enum ClientAddressError {
    /// The chosen field is absent (`-`/`null`), or ambiguous in the TEXT format.
    #[error("client address field is missing")]
    #[strum(serialize = "client_missing")]
    Missing,
    /// The field does not hold an IP address (optionally with a port).
    #[error("client address field is not an IP address")]
    #[strum(serialize = "client_invalid")]
    Invalid,
    /// X-Forwarded-For has fewer entries than `trusted_hops + 1`.
    #[error("X-Forwarded-For has fewer entries than the trusted hop count requires")]
    #[strum(serialize = "xff_too_few_hops")]
    TooFewHops,
}

impl ClientAddressError {
    /// Every `reason` label value, by [`Self::index`].
    pub const REASONS: &'static [&'static str] = Self::VARIANTS;

    /// Stable label value (`reason`) for this error.
    pub fn reason(&self) -> &'static str {
        self.into()
    }

    /// Position of [`Self::reason`] in [`Self::REASONS`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Finds the client address of `rec` according to `source`. IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`) are returned as IPv4.
///
/// # Errors
/// See [`ClientAddressError`]. The left-most X-Forwarded-For entry is never used unless it is
/// also the entry `trusted_hops` from the right.
///
/// ```
/// use vpslens_parsers::{client::{client_address, ClientAddressSource}, AccessRecord};
/// let rec = AccessRecord {
///     downstream_remote_address: Some("198.51.100.5:40000".into()),
///     x_forwarded_for: Some("203.0.113.11,198.51.100.5".into()), // left-most entry forged
///     ..Default::default()
/// };
/// let ip = client_address(&rec, ClientAddressSource::DownstreamRemote).unwrap();
/// assert_eq!(ip.to_string(), "198.51.100.5");
/// let ip = client_address(&rec, ClientAddressSource::XForwardedFor { trusted_hops: 0 }).unwrap();
/// assert_eq!(ip.to_string(), "198.51.100.5");
/// ```
pub fn client_address(
    rec: &AccessRecord<'_>,
    source: ClientAddressSource,
) -> Result<IpAddr, ClientAddressError> {
    match source {
        ClientAddressSource::DownstreamRemote => {
            let s = rec
                .downstream_remote_address
                .as_deref()
                .ok_or(ClientAddressError::Missing)?;
            parse_socket_ip(s).ok_or(ClientAddressError::Invalid)
        }
        ClientAddressSource::XForwardedFor { trusted_hops } => {
            let xff = rec
                .x_forwarded_for
                .as_deref()
                .ok_or(ClientAddressError::Missing)?;
            xff_hop(xff, trusted_hops)
        }
    }
}

/// The entry `trusted_hops` from the right of an X-Forwarded-For value (split on `,`, entries
/// trimmed of spaces and tabs).
///
/// # Errors
/// [`ClientAddressError::TooFewHops`] if there are not enough entries,
/// [`ClientAddressError::Invalid`] if the chosen entry is not an IP (with optional port).
pub fn xff_hop(xff: &str, trusted_hops: u8) -> Result<IpAddr, ClientAddressError> {
    let entry = xff
        .rsplit(',')
        .nth(usize::from(trusted_hops))
        .ok_or(ClientAddressError::TooFewHops)?;
    let entry = entry.trim_matches(|c| c == ' ' || c == '\t');
    if entry.is_empty() {
        return Err(ClientAddressError::Invalid);
    }
    parse_socket_ip(entry).ok_or(ClientAddressError::Invalid)
}

/// Parses `a.b.c.d`, `a.b.c.d:port`, `v6`, or `[v6]:port` into an IP (port ignored, mapped
/// IPv4 canonicalised).
///
/// ```
/// use vpslens_parsers::client::parse_socket_ip;
/// assert_eq!(parse_socket_ip("[2001:db8::1]:443").unwrap().to_string(), "2001:db8::1");
/// assert_eq!(parse_socket_ip("[::ffff:192.0.2.1]:80").unwrap().to_string(), "192.0.2.1");
/// assert_eq!(parse_socket_ip("203.0.113.11:5").unwrap().to_string(), "203.0.113.11");
/// assert!(parse_socket_ip("203.0.113.11:").is_none());
/// ```
pub fn parse_socket_ip(s: &str) -> Option<IpAddr> {
    let ip = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if !after.is_empty() && !valid_port(after.strip_prefix(':')?) {
            return None;
        }
        IpAddr::V6(Ipv6Addr::from_str(host).ok()?)
    } else {
        // No colon = bare IPv4; one colon = `IPv4:port` (IPv6 needs two or more); more = bare
        // IPv6 (a bracket-less IPv6 with a port is ambiguous and rejected). The last colon is
        // found from the right, a few bytes in: `IPv4:port` is settled without scanning the
        // host, which `parse_ipv4` rejects if it holds a colon.
        match s.as_bytes().iter().rposition(|&b| b == b':') {
            None => IpAddr::V4(parse_ipv4(s.as_bytes())?),
            Some(at) => {
                let (host, port) = (s.get(..at)?, s.get(at + 1..)?);
                match parse_ipv4(host.as_bytes()) {
                    Some(v4) if valid_port(port) => IpAddr::V4(v4),
                    // One colon and no `IPv4:port`: `from_str` rejects it too (IPv6 needs
                    // two colons), so this only ever accepts a bare IPv6.
                    _ => IpAddr::from_str(s).ok()?,
                }
            }
        }
    };
    Some(ip.to_canonical())
}

/// Dotted-quad IPv4 exactly as [`Ipv4Addr::from_str`] accepts it (four decimal octets of one to
/// three digits, no leading zeros, each at most 255), without its general-purpose parser: this
/// runs once per access-log line. `parsers/tests/no_panic.rs` holds the two together.
fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    if s.len() > 15 {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v: u16 = 0;
        while let Some(&d @ b'0'..=b'9') = s.get(i) {
            if i - start == 3 {
                return None;
            }
            v = v * 10 + u16::from(d - b'0');
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || (digits > 1 && s.get(start) == Some(&b'0')) {
            return None;
        }
        *octet = u8::try_from(v).ok()?;
    }
    (i == s.len()).then(|| Ipv4Addr::from(octets))
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_label_values_by_index() {
        assert_eq!(
            ClientAddressError::REASONS,
            ["client_missing", "client_invalid", "xff_too_few_hops"]
        );
        for e in [
            ClientAddressError::Missing,
            ClientAddressError::Invalid,
            ClientAddressError::TooFewHops,
        ] {
            assert_eq!(ClientAddressError::REASONS[e.index()], e.reason());
        }
    }

    fn rec<'a>(dra: Option<&'a str>, xff: Option<&'a str>) -> AccessRecord<'a> {
        AccessRecord {
            downstream_remote_address: dra.map(Into::into),
            x_forwarded_for: xff.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn downstream_v4_v6_and_mapped() {
        let d = ClientAddressSource::DownstreamRemote;
        assert_eq!(
            client_address(&rec(Some("203.0.113.11:1"), None), d),
            Ok("203.0.113.11".parse().unwrap())
        );
        assert_eq!(
            client_address(&rec(Some("[2001:db8:1::10]:5555"), None), d),
            Ok("2001:db8:1::10".parse().unwrap())
        );
        assert_eq!(
            client_address(&rec(Some("[::ffff:203.0.113.11]:5555"), None), d),
            Ok("203.0.113.11".parse().unwrap())
        );
        assert_eq!(
            client_address(&rec(Some("2001:db8::1"), None), d),
            Ok("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn downstream_errors() {
        let d = ClientAddressSource::DownstreamRemote;
        assert_eq!(
            client_address(&rec(None, None), d),
            Err(ClientAddressError::Missing)
        );
        for bad in [
            "nope",
            "1.2.3.4:port",
            "1.2.3.4:123456",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[1.2.3.4]:80",
            "2001:db8::1:80:x",
            "unix:///tmp/sock",
        ] {
            assert_eq!(
                client_address(&rec(Some(bad), None), d),
                Err(ClientAddressError::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn forged_leftmost_xff_entry_is_never_used() {
        // Regression: attributing by the left-most entry lets any node claim another's identity.
        let r = rec(None, Some("203.0.113.11, 10.9.9.9,198.51.100.5"));
        let x0 = ClientAddressSource::XForwardedFor { trusted_hops: 0 };
        assert_eq!(client_address(&r, x0), Ok("198.51.100.5".parse().unwrap()));
        let x1 = ClientAddressSource::XForwardedFor { trusted_hops: 1 };
        assert_eq!(client_address(&r, x1), Ok("10.9.9.9".parse().unwrap()));
        let x2 = ClientAddressSource::XForwardedFor { trusted_hops: 2 };
        assert_eq!(client_address(&r, x2), Ok("203.0.113.11".parse().unwrap()));
        let x3 = ClientAddressSource::XForwardedFor { trusted_hops: 3 };
        assert_eq!(client_address(&r, x3), Err(ClientAddressError::TooFewHops));
    }

    #[test]
    fn xff_entries_with_ports_tabs_and_garbage() {
        assert_eq!(
            xff_hop("a, \t1.2.3.4:80 ", 0),
            Ok("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            xff_hop("[2001:db8::2]:1", 0),
            Ok("2001:db8::2".parse().unwrap())
        );
        assert_eq!(xff_hop("1.2.3.4,", 0), Err(ClientAddressError::Invalid));
        assert_eq!(
            xff_hop("1.2.3.4,unknown", 0),
            Err(ClientAddressError::Invalid)
        );
        assert_eq!(
            client_address(
                &rec(None, None),
                ClientAddressSource::XForwardedFor { trusted_hops: 0 }
            ),
            Err(ClientAddressError::Missing)
        );
    }
}
