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
#[path = "limits_tests.rs"]
mod tests;
