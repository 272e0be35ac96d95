//! Tests of the `limits` module.
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
