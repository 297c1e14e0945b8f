//! Client address and HTTPS (PRODUCT.md §5): X-Forwarded-For / -Proto are believed only from a
//! trusted proxy; the client is the right-most forwarded entry that is not itself trusted.

use crate::config::NetSet;
use crate::rejection::Rejection;
use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// `None` when a trusted proxy forwarded an entry that is not an address: unknowable, so it
    /// matches no allowlist.
    pub addr: Option<IpAddr>,
    pub https: bool,
    /// The socket peer is a trusted proxy (its forwarded chain is kept for the upstream).
    pub peer_trusted: bool,
}

/// Works out who is delivering and whether it arrived over HTTPS.
pub fn resolve(peer: IpAddr, tls: bool, headers: &HeaderMap, trusted: &NetSet) -> Client {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return Client {
            addr: Some(peer),
            https: tls,
            peer_trusted: false,
        };
    }
    let lines: Vec<Option<&str>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .collect();
    // A line that is not visible ASCII is junk like any unparsable entry: the client is
    // unknown (fail closed), never the proxy itself.
    if lines.iter().any(Option::is_none) {
        return Client {
            addr: None,
            https: tls || forwarded_https(headers),
            peer_trusted: true,
        };
    }
    let entries: Vec<&str> = lines
        .into_iter()
        .flatten()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let addr = if entries.is_empty() {
        Some(peer)
    } else {
        let mut found = None;
        for entry in entries.iter().rev() {
            match parse_entry(entry) {
                Some(ip) if trusted.contains(ip) => continue,
                other => {
                    found = Some(other);
                    break;
                }
            }
        }
        // Every entry was a trusted proxy: the left-most is as close to the client as we know.
        found.unwrap_or_else(|| parse_entry(entries[0]))
    };
    Client {
        addr,
        https: tls || forwarded_https(headers),
        peer_trusted: true,
    }
}

/// The last X-Forwarded-Proto entry (the nearest trusted proxy's view) says https.
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// An X-Forwarded-For entry: an address, optionally with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// Refuses a client outside `allow_ips` (absent: anyone).
pub fn check(allow_ips: Option<&NetSet>, client: &Client) -> Result<(), Rejection> {
    match (allow_ips, client.addr) {
        (None, _) => Ok(()),
        (Some(nets), Some(ip)) if nets.contains(ip) => Ok(()),
        _ => Err(Rejection::IpNotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(chain: &str, proto: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", chain.parse().unwrap());
        if let Some(p) = proto {
            h.insert("x-forwarded-proto", p.parse().unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> NetSet {
        NetSet::new(&list.iter().map(|n| n.parse().unwrap()).collect::<Vec<_>>())
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let c = resolve(
            ip("198.51.100.7"),
            false,
            &xff("203.0.113.5", Some("https")),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(
            c,
            Client {
                addr: Some(ip("198.51.100.7")),
                https: false,
                peer_trusted: false
            }
        );
    }

    #[test]
    fn mapped_ipv6_peer_is_ipv4() {
        let c = resolve(
            ip("::ffff:203.0.113.9"),
            true,
            &HeaderMap::new(),
            &NetSet::default(),
        );
        assert_eq!(c.addr, Some(ip("203.0.113.9")));
        assert_eq!(check(Some(&nets(&["203.0.113.0/24"])), &c), Ok(()));
    }

    #[test]
    fn trusted_chain_picks_rightmost_untrusted() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = xff("1.1.1.1, 203.0.113.5, 10.0.0.2", Some("https"));
        let c = resolve(ip("10.0.0.1"), false, &h, &trusted);
        assert_eq!(
            c,
            Client {
                addr: Some(ip("203.0.113.5")),
                https: true,
                peer_trusted: true
            }
        );
        let all_trusted = resolve(
            ip("10.0.0.1"),
            false,
            &xff("10.0.0.3, 10.0.0.2", None),
            &trusted,
        );
        assert_eq!(all_trusted.addr, Some(ip("10.0.0.3")));
        assert!(!all_trusted.https);
        let none = resolve(ip("10.0.0.1"), false, &HeaderMap::new(), &trusted);
        assert_eq!(none.addr, Some(ip("10.0.0.1")));
        let ported = resolve(
            ip("10.0.0.1"),
            false,
            &xff("[2001:db8::1]:443", None),
            &trusted,
        );
        assert_eq!(ported.addr, Some(ip("2001:db8::1")));
    }

    #[test]
    fn a_forwarded_line_that_is_not_visible_ascii_makes_the_client_unknown() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"198.51.100.7\xff").unwrap(),
        );
        let c = resolve(ip("10.0.0.1"), false, &h, &nets(&["10.0.0.0/8"]));
        assert_eq!(c.addr, None, "not the proxy 10.0.0.1");
        assert!(check(Some(&nets(&["10.0.0.0/8"])), &c).is_err());
    }

    #[test]
    fn garbage_entry_matches_no_allowlist() {
        let trusted = nets(&["10.0.0.0/8"]);
        let c = resolve(
            ip("10.0.0.1"),
            false,
            &xff("203.0.113.5, not-an-ip", None),
            &trusted,
        );
        assert_eq!(c.addr, None);
        assert_eq!(
            check(Some(&nets(&["0.0.0.0/0"])), &c),
            Err(Rejection::IpNotAllowed)
        );
        assert_eq!(check(None, &c), Ok(()));
    }
}
