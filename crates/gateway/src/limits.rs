//! Admission limits before the upgrade, and the update rate of a session.
//!
//! Two kinds of bound protect a node from one client, or from too many:
//!
//! - [`Admission`] is checked before the WebSocket upgrade, before any
//!   document is joined or loaded. It caps the connections of the whole node
//!   and of one client address, and the rate at which one address may open
//!   them. A refusal is an HTTP status with `Retry-After`, which costs the
//!   server next to nothing.
//! - [`UpdateRateLimiter`] caps the updates one session sends once it is
//!   open. Every update is decoded, applied, broadcast and committed, so
//!   without a cap one client could take the committer's whole throughput.
//!
//! Both rates are token buckets that hold [`BURST_MULTIPLIER`] seconds'
//! worth of their rate, so an editor reconnecting or pasting can briefly go
//! over the sustained rate without being refused.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A bucket holds this many seconds of its sustained rate: the burst a
/// client may send at once after being quiet is `rate * BURST_MULTIPLIER`.
pub const BURST_MULTIPLIER: u32 = 2;

/// Fewest admits between two sweeps of the upgrade buckets, so a node that
/// sees few addresses does not sweep a tiny map on every upgrade.
const SWEEP_MIN_ADMITS: usize = 1024;

/// After a sweep the upgrade-bucket map gives memory back when its capacity
/// is more than this many times what it holds (after a burst of upgrades
/// from many addresses, say).
const SHRINK_FACTOR: usize = 4;

/// Admission limits checked before the WebSocket upgrade.
///
/// A value of 0 means "no limit" for every field, as for
/// [`UpdateRateLimiter::new`].
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Connections the whole node holds at once; past it, 503. Bounds the
    /// node's memory and tasks whatever the number of clients.
    pub max_connections: usize,
    /// Connections one client address holds at once; past it, 429. Keeps one
    /// client from taking the whole node.
    pub max_connections_per_ip: usize,
    /// Upgrades one address may attempt per second, sustained (the burst is
    /// [`BURST_MULTIPLIER`] times that); past it, 429 with the wait. Stops a
    /// reconnect loop from loading documents as fast as it can ask.
    pub upgrades_per_ip_per_second: u32,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds [`LimitsConfig::max_connections`]: 503 with
    /// `Retry-After`, the client may try another node.
    NodeFull,
    /// The address holds [`LimitsConfig::max_connections_per_ip`]: 429 with
    /// `Retry-After`.
    TooManyFromIp,
    /// The address upgrades faster than
    /// [`LimitsConfig::upgrades_per_ip_per_second`]: 429, and
    /// `Retry-After: retry_after_secs`, when the next attempt will be
    /// admitted (at least 1).
    UpgradeRateExceeded {
        /// Whole seconds, rounded up, until the address may try again.
        retry_after_secs: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeFull => f.write_str("the node holds as many connections as it may"),
            Self::TooManyFromIp => f.write_str("the address holds as many connections as it may"),
            Self::UpgradeRateExceeded { retry_after_secs } => write!(
                f,
                "the address opens connections too fast; retry in {retry_after_secs} s"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// Shared admission state (cheap to clone: [`Arc`] inside).
///
/// # Why an own token bucket rather than `governor`
///
/// The upgrade rate per address is kept here as one [`Instant`] per address
/// in a `parking_lot` map, not with `governor`'s keyed limiter:
///
/// - its state is [`tokio::time::Instant`], so tests (ours and the router's)
///   drive it in paused time; `governor` reads its own clock (`quanta`), and
///   injecting a fake one would make the clock a type parameter of
///   [`Admission`] for the sake of tests;
/// - the map must be pruned either way (`governor` needs `retain_recent`
///   called just as this needs its sweep), so the crate would save only the
///   few lines of `TokenBucket`;
/// - upgrades are rare next to messages (a handful per client per session),
///   so the lock is not contended, and a `Mutex<HashMap>` beats pulling in a
///   concurrent map and a clock crate.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    /// Largest node-wide count; `usize::MAX` when unlimited.
    max_connections: usize,
    /// Largest per-address count; `usize::MAX` when unlimited.
    max_connections_per_ip: usize,
    /// `None`: upgrades are not rate limited.
    upgrade_bucket: Option<TokenBucket>,
    /// Connections admitted and not yet dropped, node-wide.
    open: AtomicUsize,
    /// Connections per address. An address has an entry only while it holds
    /// at least one connection, so the map has at most `open` entries.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Upgrade buckets per address.
    upgrades: Mutex<UpgradeBuckets>,
}

/// The upgrade bucket of every address that upgraded recently.
///
/// An address without an entry has a full bucket. A bucket that has refilled
/// is the same as no entry, so sweeping full buckets away loses nothing.
/// The sweep visits every entry, so it runs once per as many admits as the
/// map holds (and at least [`SWEEP_MIN_ADMITS`]): amortised O(1) per admit.
/// Buckets refill within `BURST_MULTIPLIER` seconds, so the map holds the
/// addresses of the last few seconds' upgrades, however many addresses have
/// ever connected.
#[derive(Default)]
struct UpgradeBuckets {
    /// When each address's bucket will be full again.
    full_at: HashMap<IpAddr, Instant>,
    /// Admits since the last sweep.
    since_sweep: usize,
}

impl UpgradeBuckets {
    fn sweep_if_due(&mut self, now: Instant) {
        self.since_sweep = self.since_sweep.saturating_add(1);
        if self.since_sweep < self.full_at.len().max(SWEEP_MIN_ADMITS) {
            return;
        }
        self.since_sweep = 0;
        self.full_at.retain(|_, full_at| *full_at > now);
        let len = self.full_at.len();
        if self.full_at.capacity() > len.max(SWEEP_MIN_ADMITS).saturating_mul(SHRINK_FACTOR) {
            self.full_at.shrink_to(len.saturating_mul(2));
        }
    }
}

impl fmt::Debug for Admission {
    /// The counts and limits, not the maps: a node's maps hold one entry per
    /// client address, too much for a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Admission")
            .field("open_connections", &self.open_connections())
            .field("max_connections", &inner.max_connections)
            .field("max_connections_per_ip", &inner.max_connections_per_ip)
            .field("upgrade_bucket", &inner.upgrade_bucket)
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// Admission state with no connection open.
    pub fn new(config: LimitsConfig) -> Self {
        let unlimited_if_zero = |max: usize| if max == 0 { usize::MAX } else { max };
        Self {
            inner: Arc::new(Inner {
                max_connections: unlimited_if_zero(config.max_connections),
                max_connections_per_ip: unlimited_if_zero(config.max_connections_per_ip),
                upgrade_bucket: TokenBucket::per_second(config.upgrades_per_ip_per_second),
                open: AtomicUsize::new(0),
                per_ip: Mutex::new(HashMap::new()),
                upgrades: Mutex::new(UpgradeBuckets::default()),
            }),
        }
    }

    /// Admits one connection from `ip`, or says why not. The returned permit
    /// holds the connection's place (node-wide and per-IP) until dropped.
    ///
    /// The upgrade rate is checked first, then the address's count, then the
    /// node's, so an address that is refused for its own behaviour never
    /// takes a node-wide place, even for an instant. An attempt refused by
    /// the later checks still spends its upgrade token: the rate bounds
    /// attempts, so a client retrying in a loop against a full node is
    /// slowed down too. An attempt refused for its rate spends nothing.
    ///
    /// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`, as a dual-stack
    /// listener reports IPv4 peers) counts as the IPv4 address.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        self.admit_at(ip, Instant::now())
    }

    /// Connections admitted and not yet dropped on this node.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// [`Admission::admit`] at a given time, so tests can drive the rate.
    fn admit_at(&self, ip: IpAddr, now: Instant) -> Result<ConnectionPermit, Refusal> {
        let ip = ip.to_canonical();
        self.inner.take_upgrade_token(ip, now)?;
        self.inner.reserve_ip(ip)?;
        if let Err(refusal) = self.inner.reserve_node() {
            self.inner.release_ip(ip);
            return Err(refusal);
        }
        Ok(ConnectionPermit {
            inner: Arc::clone(&self.inner),
            ip,
        })
    }
}

impl Inner {
    fn take_upgrade_token(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let Some(bucket) = self.upgrade_bucket else {
            return Ok(());
        };
        let mut upgrades = self.upgrades.lock();
        upgrades.sweep_if_due(now);
        // A new entry starts full (`now`), so taking from it always succeeds
        // and no full entry is left behind by a refusal.
        let full_at = upgrades.full_at.entry(ip).or_insert(now);
        match bucket.take(*full_at, now) {
            Ok(next) => {
                *full_at = next;
                Ok(())
            }
            Err(wait) => Err(Refusal::UpgradeRateExceeded {
                retry_after_secs: whole_seconds_at_least_one(wait),
            }),
        }
    }

    fn reserve_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let mut per_ip = self.per_ip.lock();
        let held = per_ip.get(&ip).copied().unwrap_or(0);
        if held >= self.max_connections_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        per_ip.insert(ip, held.saturating_add(1));
        Ok(())
    }

    fn release_ip(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock();
        // Entries hold at least 1; the last connection removes the entry so
        // the map only holds addresses with open connections.
        if let Entry::Occupied(mut entry) = per_ip.entry(ip) {
            if *entry.get() <= 1 {
                entry.remove();
            } else {
                *entry.get_mut() -= 1;
            }
        }
    }

    /// Takes a node-wide place unless the node is full. A compare-and-swap
    /// loop rather than add-then-check, so the count never exceeds the max,
    /// even for an instant, and `open_connections` never reports more.
    /// Relaxed ordering suffices: the counter guards nothing but itself.
    fn reserve_node(&self) -> Result<(), Refusal> {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.max_connections).then(|| open.saturating_add(1))
            })
            .map(drop)
            .map_err(|_full| Refusal::NodeFull)
    }

    fn release_node(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One admitted connection's place, node-wide and for its address; dropping
/// it gives both back. The session task owns it, so the place is held
/// exactly as long as the session runs, however the session ends.
pub struct ConnectionPermit {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl ConnectionPermit {
    /// The address the connection counts against (IPv4-mapped IPv6
    /// addresses are reported as IPv4).
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPermit")
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        // Reverse order of acquisition (per-IP, then node): the node count
        // then never exceeds what the per-IP counts allow, even for a moment.
        self.inner.release_node();
        self.inner.release_ip(self.ip);
    }
}

/// Per-session update rate limit: a token bucket refilling at the rate per
/// second and holding [`BURST_MULTIPLIER`] times it.
///
/// A plain struct, no lock: one session task owns it. Time is passed in as a
/// [`tokio::time::Instant`] so the session's tests run in paused time.
#[derive(Debug)]
pub struct UpdateRateLimiter {
    /// `None`: unlimited.
    bucket: Option<TokenBucket>,
    /// When the bucket will be full again; `None`: it is full.
    full_at: Option<Instant>,
}

impl UpdateRateLimiter {
    /// A full bucket for `updates_per_second`; 0 means unlimited.
    pub fn new(updates_per_second: u32) -> Self {
        Self {
            bucket: TokenBucket::per_second(updates_per_second),
            full_at: None,
        }
    }

    /// Takes one token at `now`; false if the bucket is empty.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        let Some(bucket) = self.bucket else {
            return true;
        };
        match bucket.take(self.full_at.unwrap_or(now), now) {
            Ok(next) => {
                self.full_at = Some(next);
                true
            }
            Err(_wait) => false,
        }
    }
}

/// The shape of a token bucket: how fast it refills, how much it holds.
///
/// The state of one bucket is a single instant, when it will be full again
/// (GCRA's "theoretical arrival time"): at `now` it holds
/// `burst - (full_at - now) / interval` tokens. One instant instead of a
/// token count and a last-refill time needs no floats and no refill step,
/// and "this bucket is full" is `full_at <= now`, which is what a sweep asks.
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    /// Time for one token to come back: one second over the rate.
    interval: Duration,
    /// How far `full_at` may lie ahead of now with a token still left:
    /// `burst - 1` intervals.
    tolerance: Duration,
}

impl TokenBucket {
    /// The bucket for `rate` tokens per second; `None` for 0 (unlimited).
    fn per_second(rate: u32) -> Option<Self> {
        if rate == 0 {
            return None;
        }
        let interval = Duration::from_secs(1) / rate;
        let burst = rate.saturating_mul(BURST_MULTIPLIER);
        Some(Self {
            interval,
            tolerance: interval.saturating_mul(burst.saturating_sub(1)),
        })
    }

    /// Takes one token from the bucket that is full at `full_at`: its new
    /// full time, or how long until a token is back.
    fn take(self, full_at: Instant, now: Instant) -> Result<Instant, Duration> {
        let ahead = full_at.saturating_duration_since(now);
        if ahead > self.tolerance {
            return Err(ahead.saturating_sub(self.tolerance));
        }
        Ok(now.max(full_at) + self.interval)
    }
}

/// `Retry-After` for a wait: whole seconds rounded up, so the client never
/// comes back early, and at least 1 (0 would invite an immediate retry).
fn whole_seconds_at_least_one(wait: Duration) -> u64 {
    let rounded_up = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    rounded_up.max(1)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Barrier;
    use std::thread;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn admission(max: usize, per_ip: usize, upgrades_per_second: u32) -> Admission {
        Admission::new(LimitsConfig {
            max_connections: max,
            max_connections_per_ip: per_ip,
            upgrades_per_ip_per_second: upgrades_per_second,
        })
    }

    fn per_ip_entries(admission: &Admission) -> usize {
        admission.inner.per_ip.lock().len()
    }

    fn held_by(admission: &Admission, address: IpAddr) -> Option<usize> {
        admission.inner.per_ip.lock().get(&address).copied()
    }

    #[test]
    fn node_wide_max_is_enforced_and_released_on_drop() {
        let admission = admission(2, 10, 0);
        let first = admission.admit(ip(1)).unwrap();
        let _second = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.open_connections(), 2);
        assert_eq!(admission.admit(ip(3)).unwrap_err(), Refusal::NodeFull);
        assert_eq!(admission.open_connections(), 2);

        drop(first);
        assert_eq!(admission.open_connections(), 1);
        let _third = admission.admit(ip(3)).unwrap();
        assert_eq!(admission.open_connections(), 2);
    }

    #[test]
    fn node_full_gives_back_the_address_place() {
        let admission = admission(1, 10, 0);
        let _held = admission.admit(ip(1)).unwrap();
        assert_eq!(admission.admit(ip(2)).unwrap_err(), Refusal::NodeFull);
        assert_eq!(held_by(&admission, ip(2)), None);
        assert_eq!(admission.admit(ip(1)).unwrap_err(), Refusal::NodeFull);
        assert_eq!(held_by(&admission, ip(1)), Some(1));
    }

    #[test]
    fn per_ip_max_is_per_address_and_entries_go_at_zero() {
        let admission = admission(100, 2, 0);
        let a1 = admission.admit(ip(1)).unwrap();
        let a2 = admission.admit(ip(1)).unwrap();
        assert_eq!(admission.admit(ip(1)).unwrap_err(), Refusal::TooManyFromIp);
        assert_eq!(admission.open_connections(), 2);

        let b1 = admission.admit(ip(2)).unwrap();
        let b2 = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.admit(ip(2)).unwrap_err(), Refusal::TooManyFromIp);
        assert_eq!(per_ip_entries(&admission), 2);

        drop(a1);
        assert_eq!(held_by(&admission, ip(1)), Some(1));
        let a3 = admission.admit(ip(1)).unwrap();
        drop(a2);
        drop(a3);
        assert_eq!(held_by(&admission, ip(1)), None);
        assert_eq!(per_ip_entries(&admission), 1);

        drop((b1, b2));
        assert_eq!(per_ip_entries(&admission), 0);
        assert_eq!(admission.open_connections(), 0);
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let admission = admission(100, 1, 0);
        let v4 = Ipv4Addr::new(198, 51, 100, 7);
        let permit = admission.admit(IpAddr::V4(v4)).unwrap();
        assert_eq!(
            admission
                .admit(IpAddr::V6(v4.to_ipv6_mapped()))
                .unwrap_err(),
            Refusal::TooManyFromIp
        );
        drop(permit);
        let mapped = admission.admit(IpAddr::V6(v4.to_ipv6_mapped())).unwrap();
        assert_eq!(mapped.ip(), IpAddr::V4(v4));
        let _other_v6 = admission.admit(IpAddr::V6(Ipv6Addr::LOCALHOST)).unwrap();
    }

    #[test]
    fn zero_means_no_limit() {
        let admission = admission(0, 0, 0);
        let permits: Vec<_> = (0..1000).map(|_| admission.admit(ip(1)).unwrap()).collect();
        assert_eq!(admission.open_connections(), 1000);
        drop(permits);
        assert_eq!(admission.open_connections(), 0);
        assert_eq!(per_ip_entries(&admission), 0);
    }

    /// Admits and drops from many threads at once; `held` counts the permits
    /// alive at any moment, and its peak must stay within the limit.
    fn hammer(admission: &Admission, threads: u8, rounds: usize, addresses: u8) -> usize {
        let held = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let start = Barrier::new(usize::from(threads));
        thread::scope(|scope| {
            for thread in 0..threads {
                let (held, peak, start) = (&held, &peak, &start);
                scope.spawn(move || {
                    start.wait();
                    for round in 0..rounds {
                        let address = ip((usize::from(thread) + round) as u8 % addresses);
                        if let Ok(permit) = admission.admit(address) {
                            let now_held = held.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now_held, Ordering::SeqCst);
                            peak.fetch_max(admission.open_connections(), Ordering::SeqCst);
                            thread::yield_now();
                            held.fetch_sub(1, Ordering::SeqCst);
                            drop(permit);
                        }
                    }
                });
            }
        });
        assert_eq!(admission.open_connections(), 0);
        assert_eq!(per_ip_entries(admission), 0);
        peak.load(Ordering::SeqCst)
    }

    #[test]
    fn concurrent_admits_never_exceed_the_node_max() {
        let admission = admission(8, 1000, 0);
        let peak = hammer(&admission, 32, 2000, 64);
        assert!((1..=8).contains(&peak), "peak {peak}");
    }

    #[test]
    fn concurrent_admits_never_exceed_the_per_ip_max() {
        let admission = admission(1000, 3, 0);
        let peak = hammer(&admission, 32, 2000, 1);
        assert!((1..=3).contains(&peak), "peak {peak}");
    }

    #[tokio::test(start_paused = true)]
    async fn upgrade_rate_allows_a_burst_then_refuses_until_refilled() {
        // 2 per second: a burst of 4, then one every 500 ms.
        let admission = admission(100, 100, 2);
        for _ in 0..4 {
            drop(admission.admit(ip(1)).unwrap());
        }
        let Err(Refusal::UpgradeRateExceeded { retry_after_secs }) = admission.admit(ip(1)) else {
            panic!("the fifth upgrade in a burst of 4 was admitted");
        };
        assert_eq!(retry_after_secs, 1);
        // Another address has its own bucket.
        drop(admission.admit(ip(2)).unwrap());

        tokio::time::advance(Duration::from_millis(500)).await;
        drop(admission.admit(ip(1)).unwrap());
        assert!(matches!(
            admission.admit(ip(1)),
            Err(Refusal::UpgradeRateExceeded { .. })
        ));

        // Quiet for long enough refills the whole burst, and no more.
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..4 {
            drop(admission.admit(ip(1)).unwrap());
        }
        assert!(admission.admit(ip(1)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn upgrade_rate_refusal_takes_no_place_and_waits_whole_seconds() {
        // 1 per second: a burst of 2, then the wait for a token is 1 s.
        let admission = admission(100, 100, 1);
        let _first = admission.admit(ip(1)).unwrap();
        let _second = admission.admit(ip(1)).unwrap();
        let refusal = admission.admit(ip(1)).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::UpgradeRateExceeded {
                retry_after_secs: 1
            }
        );
        assert_eq!(admission.open_connections(), 2);
        assert_eq!(held_by(&admission, ip(1)), Some(2));

        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(admission.admit(ip(1)).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(admission.admit(ip(1)).is_ok());
    }

    #[test]
    fn upgrade_buckets_of_quiet_addresses_are_swept() {
        let admission = admission(0, 0, 10);
        let start = Instant::now();
        let addresses = 5000_u16;
        for n in 0..addresses {
            let address = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n));
            drop(admission.admit_at(address, start).unwrap());
        }
        assert!(admission.inner.upgrades.lock().full_at.len() >= usize::from(addresses) / 2);

        // Long after, one busy address: the sweep drops every full bucket.
        let later = start + Duration::from_secs(5);
        for _ in 0..usize::from(addresses) * 2 {
            drop(admission.admit_at(ip(1), later));
        }
        let upgrades = admission.inner.upgrades.lock();
        assert!(
            upgrades.full_at.len() <= 1,
            "{} buckets",
            upgrades.full_at.len()
        );
        assert!(upgrades.full_at.capacity() <= SWEEP_MIN_ADMITS * SHRINK_FACTOR);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds_at_least_one(Duration::ZERO), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_secs(1)), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(1001)), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn update_rate_allows_a_burst_then_refills_over_time() {
        // 5 per second: a burst of 10, then one every 200 ms.
        let mut limiter = UpdateRateLimiter::new(5);
        let now = Instant::now();
        for _ in 0..10 {
            assert!(limiter.try_acquire(now));
        }
        assert!(!limiter.try_acquire(now));

        tokio::time::advance(Duration::from_millis(199)).await;
        assert!(!limiter.try_acquire(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.try_acquire(Instant::now()));
        assert!(!limiter.try_acquire(Instant::now()));

        // A long pause refills the burst, not more.
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        let granted = (0..100).filter(|_| limiter.try_acquire(now)).count();
        assert_eq!(granted, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn update_rate_sustains_its_rate() {
        let mut limiter = UpdateRateLimiter::new(50);
        let mut granted = 0;
        // 10 s at one attempt per millisecond: the burst plus 50 a second.
        for _ in 0..10_000 {
            if limiter.try_acquire(Instant::now()) {
                granted += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!((500..=600).contains(&granted), "{granted} granted");
    }

    #[test]
    fn update_rate_zero_is_unlimited() {
        let mut limiter = UpdateRateLimiter::new(0);
        let now = Instant::now();
        assert!((0..100_000).all(|_| limiter.try_acquire(now)));
    }
}
