//! Who is on the other end of a request: the client's address and the
//! scheme it used, as seen through the proxies this node trusts.
//!
//! Behind a load balancer every TCP peer is the balancer, so a limit keyed
//! on the peer would put every user in one bucket. `X-Forwarded-For`,
//! `Forwarded` and `X-Forwarded-Proto` are read only when the TCP peer is a
//! trusted proxy (`TRUSTED_PROXIES`); from anyone else they are ignored, as
//! a client could write anything there.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::{HeaderMap, header};
use ipnet::IpNet;

/// The networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// Why a `TRUSTED_PROXIES` entry was refused.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR (10.0.0.0/8, fd00::/8)")]
pub struct BadProxy(String);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDRs.
    pub fn parse(list: &str) -> Result<Self, BadProxy> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadProxy(s.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client behind a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Its address: the TCP peer, or what a trusted proxy says.
    pub ip: IpAddr,
    /// Whether it reached the first proxy over TLS (`https`/`wss`), as a
    /// trusted proxy says; false for a direct connection (this node serves
    /// plain HTTP).
    pub tls: bool,
}

impl Client {
    /// Resolves the client of a request from `peer` with `headers`.
    pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> Self {
        let peer_ip = canonical(peer.ip());
        if !trusted.trusts(peer_ip) {
            return Self {
                ip: peer_ip,
                tls: false,
            };
        }
        // Right to left: the nearest hop that is not one of ours is the
        // client; what lies further left was written by that client.
        let hops = forwarded_for(headers);
        let ip = hops
            .iter()
            .rev()
            .copied()
            .find(|ip| !trusted.trusts(*ip))
            .or_else(|| hops.first().copied())
            .unwrap_or(peer_ip);
        Self {
            ip,
            tls: forwarded_proto(headers).is_some_and(|p| p.eq_ignore_ascii_case("https")),
        }
    }

    /// The key of per-address limits: an IPv4 address, or an IPv6 /64 (one
    /// subscriber usually holds a whole /64, so per-address keys would give
    /// each of them 2^64 buckets).
    pub fn rate_key(&self) -> IpAddr {
        rate_key(self.ip)
    }
}

/// The key of per-address limits for `ip`: IPv4 as it is (an IPv4-mapped
/// IPv6 address as the IPv4 it is), IPv6 by its /64.
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as the IPv4 they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The hops of `X-Forwarded-For` (every such header, in order), else the
/// `for=` parameters of `Forwarded`. Entries that are not addresses
/// (`unknown`, obfuscated names) are skipped.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| parse_node(hop.trim()))
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    forwarded_params(headers, "for")
        .filter_map(|v| parse_node(&v))
        .collect()
}

/// The protocol the client used: `X-Forwarded-Proto`, else the last
/// `proto=` of `Forwarded`.
fn forwarded_proto(headers: &HeaderMap) -> Option<String> {
    if let Some(proto) = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        // A chain of proxies may append: the first is the client's.
        return proto.split(',').next().map(|p| p.trim().to_owned());
    }
    forwarded_params(headers, "proto").next()
}

/// Every value of parameter `name` in the `Forwarded` headers (RFC 7239),
/// unquoted, in order.
fn forwarded_params<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(move |pair| {
            let (key, value) = pair.trim().split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().trim_matches('"').to_owned())
        })
}

/// An address from a forwarding header: `1.2.3.4`, `1.2.3.4:5678`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:5678`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40_000)
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7").unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        // From a stranger the header is a lie it could tell.
        let direct = Client::resolve(peer("198.51.100.1"), &xff, &trusted);
        assert_eq!(direct.ip, "198.51.100.1".parse::<IpAddr>().unwrap());
        let proxied = Client::resolve(peer("10.1.2.3"), &xff, &trusted);
        assert_eq!(proxied.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        let single = Client::resolve(peer("192.168.1.7"), &xff, &trusted);
        assert_eq!(single.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        // No trusted proxies: never read.
        let none = Client::resolve(peer("10.1.2.3"), &xff, &TrustedProxies::default());
        assert_eq!(none.ip, "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client wrote "1.1.1.1" itself; nginx appended its real address.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.2")]);
        let c = Client::resolve(peer("10.0.0.1"), &h, &trusted);
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        // Two headers are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.10"),
        ]);
        let c = Client::resolve(peer("10.0.0.1"), &h, &trusted);
        assert_eq!(c.ip, "203.0.113.10".parse::<IpAddr>().unwrap());
        // Every hop trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        let c = Client::resolve(peer("10.0.0.1"), &h, &trusted);
        assert_eq!(c.ip, "10.9.9.9".parse::<IpAddr>().unwrap());
        // Garbage only: the peer.
        let h = headers(&[("x-forwarded-for", "unknown, , not-an-ip")]);
        let c = Client::resolve(peer("10.0.0.1"), &h, &trusted);
        assert_eq!(c.ip, "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_header_and_scheme() {
        let trusted = TrustedProxies::parse("127.0.0.1").unwrap();
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=https;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\"",
        )]);
        let c = Client::resolve(peer("127.0.0.1"), &h, &trusted);
        assert_eq!(c.ip, "2001:db8:cafe::17".parse::<IpAddr>().unwrap());
        assert!(c.tls);
        let h = headers(&[("x-forwarded-proto", "http")]);
        assert!(!Client::resolve(peer("127.0.0.1"), &h, &trusted).tls);
        let h = headers(&[("x-forwarded-proto", "https")]);
        assert!(Client::resolve(peer("127.0.0.1"), &h, &trusted).tls);
        assert!(
            !Client::resolve(peer("127.0.0.2"), &h, &trusted).tls,
            "not from a stranger"
        );
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let trusted = TrustedProxies::default();
        let a = Client::resolve(peer("2001:db8:1:2:aaaa::1"), &HeaderMap::new(), &trusted);
        let b = Client::resolve(peer("2001:db8:1:2:bbbb::9"), &HeaderMap::new(), &trusted);
        let c = Client::resolve(peer("2001:db8:1:3::1"), &HeaderMap::new(), &trusted);
        assert_eq!(a.rate_key(), b.rate_key());
        assert_ne!(a.rate_key(), c.rate_key());
        let mapped = Client::resolve(peer("::ffff:10.0.0.1"), &HeaderMap::new(), &trusted);
        assert_eq!(mapped.rate_key(), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn proxy_lists_parse_or_name_the_bad_entry() {
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        let t = TrustedProxies::parse("10.0.0.0/8,::1, fd00::/8").unwrap();
        assert!(t.trusts("::1".parse().unwrap()));
        assert!(t.trusts("fd12::3".parse().unwrap()));
        assert!(t.trusts("::ffff:10.3.3.3".parse().unwrap()));
        let e = TrustedProxies::parse("10.0.0.0/8, nginx").unwrap_err();
        assert!(e.to_string().contains("nginx"));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
    }
}
