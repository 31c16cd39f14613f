//! Who sent a request: the client's address and its `JSESSIONID` cookie, which HTTP
//! sessions are bound to (`Owner`) and connections are counted by.
//!
//! The address is the TCP peer's (the server must put it in each request's extensions as
//! `ConnectInfo<SocketAddr>`, as the gateway's [`crate::serve`] and axum's
//! `into_make_service_with_connect_info::<SocketAddr>()` do; without it every request has
//! none), or, when the peer is a trusted proxy, the rightmost `X-Forwarded-For` entry that
//! is not itself a trusted proxy: each proxy appends the address it was reached from, so
//! entries left of the first untrusted one may be forged by the client and are ignored.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const FORWARDED_FOR: &str = "x-forwarded-for";

/// What a request says about its sender.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The client's address; `None` when the server was not given the peer's.
    pub address: Option<IpAddr>,
    /// The request's `JSESSIONID`, when it is a plain token.
    pub cookie: Option<String>,
}

impl Client {
    /// The sender of the request with these `parts`, behind `trusted` proxies.
    pub fn of(parts: &Parts, trusted: &[IpNet]) -> Client {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Client {
            address: peer.map(|peer| address(peer, &parts.headers, trusted)),
            cookie: jsessionid(&parts.headers).map(str::to_owned),
        }
    }
}

/// The client's address: `peer`, or behind trusted proxies the nearest untrusted
/// `X-Forwarded-For` hop. An entry that is not an address stops the walk at the proxy
/// that wrote it (a trusted proxy writes addresses; anything else is not believed).
pub fn address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    // Several header lines form one list, in order.
    let hops: Vec<&str> = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The request's `JSESSIONID` cookie, when it is a plain token.
pub(super) fn jsessionid(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("JSESSIONID="))
        .find(|value| {
            !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
        })
}

/// A new `JSESSIONID`: 128 bits from the thread's CSPRNG (ChaCha, seeded by the OS).
pub(super) fn new_jsessionid() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Who may use an HTTP session: whoever presents the cookie its creating request carried,
/// or, when it carried none, whoever comes from the same address.
///
/// Browsers send the cookie on every transport of a site that set it (the credentialed
/// XHRs, same-site scripts and iframes), so their sessions are told apart even behind one
/// NAT. Node's `sockjs-client` sends no cookies, and a cross-origin `EventSource` none
/// either: such sessions are bound to the address, and a later request of theirs that does
/// carry a cookie still passes. Binding to the cookie *or* the address would let a
/// neighbour behind the same NAT in; binding to both would drop a browser whose cookie
/// arrived after the session opened. A session is lost (the client reconnects) when its
/// cookie is replaced (another tab's first `/info` racing this one's, an application on
/// the same host rotating its own `JSESSIONID`) or its address changes.
#[derive(Debug, Clone)]
pub(super) enum Owner {
    /// The SHA-256 of the creating request's `JSESSIONID` (fixed length, compared in
    /// constant time; the secret itself is not kept).
    Cookie([u8; 32]),
    /// The creating request's address.
    Address(Option<IpAddr>),
}

impl Owner {
    pub(super) fn of(client: &Client) -> Owner {
        match &client.cookie {
            Some(cookie) => Owner::Cookie(Sha256::digest(cookie.as_bytes()).into()),
            None => Owner::Address(client.address),
        }
    }

    /// Whether `client` may use the session.
    pub(super) fn admits(&self, client: &Client) -> bool {
        match self {
            Owner::Cookie(digest) => client.cookie.as_ref().is_some_and(|cookie| {
                let presented: [u8; 32] = Sha256::digest(cookie.as_bytes()).into();
                bool::from(presented.ct_eq(digest))
            }),
            Owner::Address(address) => *address == client.address,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(FORWARDED_FOR, line.parse().unwrap());
        }
        headers
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let headers = forwarded(&["198.51.100.1"]);
        assert_eq!(address(ip("192.0.2.9"), &headers, &[]), ip("192.0.2.9"));
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            address(ip("192.0.2.9"), &headers, &trusted),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let peer = ip("10.0.0.2");
        // The client forged the leftmost entry; the proxies appended the rest.
        let headers = forwarded(&["6.6.6.6, 203.0.113.7", "10.1.1.1"]);
        assert_eq!(address(peer, &headers, &trusted), ip("203.0.113.7"));
        let headers = forwarded(&["203.0.113.7:51234, [fd00::1]:80"]);
        assert_eq!(address(peer, &headers, &trusted), ip("203.0.113.7"));
        // No header: the proxy itself.
        assert_eq!(address(peer, &HeaderMap::new(), &trusted), peer);
        // Every hop trusted: the furthest one.
        let headers = forwarded(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(address(peer, &headers, &trusted), ip("10.9.9.9"));
        // Garbage stops the walk at the trusted hop that handed it over.
        let headers = forwarded(&["203.0.113.7, unknown, 10.1.1.1"]);
        assert_eq!(address(peer, &headers, &trusted), ip("10.1.1.1"));
    }

    #[test]
    fn ipv4_mapped_peers_are_ipv4() {
        let trusted = nets(&["127.0.0.1/32"]);
        let headers = forwarded(&["::ffff:198.51.100.4"]);
        assert_eq!(
            address(ip("::ffff:127.0.0.1"), &headers, &trusted),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn jsessionid_is_taken_only_when_plain() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=b; JSESSIONID=abcdef".parse().unwrap());
        assert_eq!(jsessionid(&headers), Some("abcdef"));
        headers.insert(header::COOKIE, "JSESSIONID=a,b".parse().unwrap());
        assert_eq!(jsessionid(&headers), None);
    }

    #[test]
    fn new_jsessionids_are_128_random_bits() {
        let (a, b) = (new_jsessionid(), new_jsessionid());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_session_admits_its_cookie_or_else_its_address() {
        let victim = Client {
            address: Some(ip("192.0.2.1")),
            cookie: Some("victim-cookie".into()),
        };
        let owner = Owner::of(&victim);
        assert!(owner.admits(&victim));
        let neighbour = Client {
            cookie: Some("other".into()),
            ..victim.clone()
        };
        assert!(!owner.admits(&neighbour), "same address, other cookie");
        let cookieless = Client {
            cookie: None,
            ..victim.clone()
        };
        assert!(!owner.admits(&cookieless), "same address, no cookie");
        let moved = Client {
            address: Some(ip("198.51.100.1")),
            ..victim.clone()
        };
        assert!(owner.admits(&moved), "the cookie, from elsewhere");

        let owner = Owner::of(&cookieless);
        assert!(owner.admits(&cookieless));
        assert!(owner.admits(&victim), "its later request with a cookie");
        let elsewhere = Client {
            address: Some(ip("198.51.100.1")),
            cookie: None,
        };
        assert!(!owner.admits(&elsewhere));
        assert!(
            !owner.admits(&moved),
            "another address, whatever its cookie"
        );
    }
}
