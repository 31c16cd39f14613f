//! What every connection task shares: the hub, the authenticator, the limits, the
//! metrics, the shutdown token, the allowed origins, the connection permits and the
//! count of connections not yet authenticated ([`Pending`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::hub::Hub;
use crate::metrics::GatewayMetrics;
use crate::session::SessionConfig;
use crate::sync::Sync;
use shared::channel::Channels;

/// Per-connection limits, shared by every transport.
#[derive(Debug, Clone)]
pub struct Limits {
    pub session: SessionConfig,
    pub max_frame_bytes: usize,
    pub max_headers: usize,
    pub first_frame_timeout: Duration,
    pub send_timeout: Duration,
    /// Close a session (ERROR `JWT expired`) when the JWT it connected with expires.
    pub close_on_token_expiry: bool,
}

/// Which browser origins may connect.
#[derive(Debug, Clone)]
pub struct Origins(Option<Vec<String>>);

impl Origins {
    pub fn new(list: &[String]) -> Origins {
        let list: Vec<String> = list
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if list.is_empty() || list.iter().any(|o| o == "*") {
            Origins(None)
        } else {
            Origins(Some(list))
        }
    }

    /// The allowed origins; `None`: any.
    pub fn list(&self) -> Option<&[String]> {
        self.0.as_deref()
    }

    /// Whether a request with these headers may connect.
    pub fn allows(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(list) = &self.0 else { return true };
        match headers
            .get(axum::http::header::ORIGIN)
            .and_then(|o| o.to_str().ok())
        {
            None => true,
            Some(origin) => list
                .iter()
                .any(|allowed| allowed == origin.trim_end_matches('/')),
        }
    }
}

/// What every connection task shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub channels: Channels,
    pub sync: Sync,
    pub auth: Authenticator,
    pub limits: Limits,
    pub metrics: GatewayMetrics,
    pub shutdown: CancellationToken,
    pub origins: Origins,
    pub connections: Arc<Semaphore>,
    /// Connections admitted and not yet authenticated.
    pub pending: Pending,
}

/// Connections that have not completed CONNECT yet, counted per client address and in all.
///
/// Each holds a connection permit until it authenticates or its first-frame timeout ends
/// it; without these bounds, a few hosts opening connections that never CONNECT could hold
/// every permit. Authenticated connections are not counted here, so users behind one NAT
/// are limited only while their handshakes overlap. IPv6 clients are counted by /64 (one
/// host usually has a whole /64 to pick addresses from). A connection whose address is
/// unknown counts only toward the total.
#[derive(Clone)]
pub struct Pending(Arc<PendingInner>);

struct PendingInner {
    /// Most per address (0: no limit).
    per_address: usize,
    /// Most in all (0: no limit).
    total: usize,
    counts: Mutex<PendingCounts>,
}

#[derive(Default)]
struct PendingCounts {
    total: usize,
    /// Addresses with at least one pending connection.
    by_address: HashMap<IpAddr, usize>,
}

/// Why a connection cannot wait for its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingFull {
    /// Its address has `per_address` pending already.
    Address,
    /// `total` are pending already.
    Total,
}

impl Pending {
    /// At most `per_address` pending connections per client address and `total` in all;
    /// 0 lifts either limit.
    pub fn new(per_address: usize, total: usize) -> Pending {
        Pending(Arc::new(PendingInner {
            per_address,
            total,
            counts: Mutex::new(PendingCounts::default()),
        }))
    }

    /// A slot for a new connection from `address`, held until it authenticates or ends.
    pub fn enter(&self, address: Option<IpAddr>) -> Result<PendingSlot, PendingFull> {
        let inner = &self.0;
        let key = address.filter(|_| inner.per_address > 0).map(counted_as);
        let mut counts = inner.counts.lock().expect("pending counts");
        if inner.total > 0 && counts.total >= inner.total {
            return Err(PendingFull::Total);
        }
        if let Some(key) = key {
            let held = counts.by_address.entry(key).or_default();
            if *held >= inner.per_address {
                return Err(PendingFull::Address);
            }
            *held += 1;
        }
        counts.total += 1;
        Ok(PendingSlot {
            pending: self.clone(),
            key,
        })
    }

    /// Connections pending now.
    pub fn count(&self) -> usize {
        self.0.counts.lock().expect("pending counts").total
    }

    /// Connections pending now from `address` (0 when addresses are not limited).
    pub fn count_from(&self, address: IpAddr) -> usize {
        let counts = self.0.counts.lock().expect("pending counts");
        counts
            .by_address
            .get(&counted_as(address))
            .copied()
            .unwrap_or_default()
    }
}

/// The address a client is counted by: IPv4 as is, IPv6 by its /64.
fn counted_as(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into()),
        v4 => v4,
    }
}

/// One pending connection; dropping it (authenticated, or ended) frees its slot.
pub struct PendingSlot {
    pending: Pending,
    key: Option<IpAddr>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self.pending.0.counts.lock().expect("pending counts");
        counts.total -= 1;
        if let Some(key) = self.key {
            if let Some(held) = counts.by_address.get_mut(&key) {
                *held -= 1;
                if *held == 0 {
                    counts.by_address.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_gets_it_back() {
        let pending = Pending::new(2, 10);
        let a = pending.enter(ip("192.0.2.1")).unwrap();
        let b = pending.enter(ip("192.0.2.1")).unwrap();
        assert_eq!(
            pending.enter(ip("192.0.2.1")).err(),
            Some(PendingFull::Address)
        );
        let other = pending.enter(ip("192.0.2.2")).unwrap();
        assert_eq!(pending.count(), 3);
        drop(a);
        let c = pending.enter(ip("192.0.2.1")).unwrap();
        drop((b, c, other));
        assert_eq!(pending.count(), 0);
        assert!(pending.0.counts.lock().unwrap().by_address.is_empty());
    }

    #[test]
    fn the_total_bounds_every_address_together() {
        let pending = Pending::new(2, 3);
        let held: Vec<_> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
            .into_iter()
            .map(|a| pending.enter(ip(a)).unwrap())
            .collect();
        assert_eq!(
            pending.enter(ip("192.0.2.4")).err(),
            Some(PendingFull::Total)
        );
        assert_eq!(pending.enter(None).err(), Some(PendingFull::Total));
        drop(held);
        assert!(pending.enter(None).is_ok());
    }

    #[test]
    fn ipv6_hosts_are_counted_by_their_64() {
        let pending = Pending::new(1, 0);
        let _a = pending.enter(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            pending.enter(ip("2001:db8:1:2:ffff::9")).err(),
            Some(PendingFull::Address)
        );
        assert!(pending.enter(ip("2001:db8:1:3::1")).is_ok());
        // An IPv4-mapped address is its IPv4 address.
        let _b = pending.enter(ip("192.0.2.1")).unwrap();
        assert_eq!(
            pending.enter(ip("::ffff:192.0.2.1")).err(),
            Some(PendingFull::Address)
        );
    }

    #[test]
    fn zero_lifts_a_limit_and_unknown_addresses_count_only_in_the_total() {
        let unlimited = Pending::new(0, 0);
        let held: Vec<_> = (0..100)
            .map(|_| unlimited.enter(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(unlimited.count(), 100);
        assert_eq!(unlimited.count_from("192.0.2.1".parse().unwrap()), 0);
        drop(held);
        let pending = Pending::new(1, 0);
        let _held: Vec<_> = (0..3).map(|_| pending.enter(None).unwrap()).collect();
        assert_eq!(pending.count(), 3);
    }
}
