//! Scenario "maxrate": the highest durable update rate one node sustains,
//! found by a bounded search.
//!
//! One step offers a total rate over `maxrate_docs` documents (one writer
//! and one reader each, as the throughput scenario) for `maxrate_seconds`,
//! against a server started fresh for that step. A step passes when:
//!
//! - the run's check passes (every update delivered once and in order, all
//!   replicas equal, a fresh client loads the same state), within
//!   [`STEP_DRAIN`] after the last send;
//! - the readers' p99 latency is at most [`MAX_P99_MS`];
//! - the writers offered the rate: the rate they achieved (updates over
//!   their sending time) is at least [`MIN_ACHIEVED`] of the one asked
//!   (a server that reads slowly pushes back on the writers' sockets).
//!
//! The search starts at `maxrate_start_rate` and doubles while steps pass
//! (halves while they fail, if the first one fails), at most
//! `maxrate_doublings` times, then bisects between the highest passing and
//! the lowest failing rate `maxrate_bisections` times. It stops early once
//! `maxrate_budget_seconds` have passed. Its result is the highest passing
//! step's measurements.
//!
//! The driver runs on the same cores as the server: every step's driver
//! CPU is measured too, so a report can say when the driver, not the
//! server, was the limit.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::processes::Programs;
use crate::scenarios::Metrics;
use crate::servers::{self, RunningServer, ServerKind};
use crate::session::{self, Plan};
use crate::sizes::Sizes;

/// Time allowed after a step's sending time for its last updates to arrive.
/// More than [`MAX_P99_MS`], so a step that fails on latency is judged by
/// its p99 rather than cut off first.
pub(crate) const STEP_DRAIN: Duration = Duration::from_secs(3);
/// A step whose readers' p99 is above this has run away.
pub(crate) const MAX_P99_MS: f64 = 1_000.0;
/// A step whose writers achieved less than this share of the offered rate
/// did not sustain it.
pub(crate) const MIN_ACHIEVED: f64 = 0.9;
/// Rates are rounded to this many updates per second.
const RATE_GRAIN: f64 = 10.0;

/// How one step went.
enum Verdict {
    /// Sustained, with its measurements.
    Passed(Metrics),
    /// Not sustained (why is logged): whether it was a failed correctness
    /// check rather than too slow.
    Failed { check: bool },
}

/// Searches the highest rate `kind` sustains; the metrics of its highest
/// passing step plus the search's own (`max_rate`, `steps`, `failed_rate`,
/// `failed_check`, `capped`).
pub(crate) async fn search(
    kind: ServerKind,
    sizes: &Sizes,
    programs: &Programs,
    scratch: &Path,
) -> anyhow::Result<Metrics> {
    search_with(sizes, |rate| step(kind, sizes, programs, scratch, rate)).await
}

/// The search, over any step (the tests' are made up).
async fn search_with<F, Fut>(sizes: &Sizes, mut step: F) -> anyhow::Result<Metrics>
where
    F: FnMut(f64) -> Fut,
    Fut: Future<Output = anyhow::Result<Verdict>>,
{
    let started = Instant::now();
    let budget = Duration::from_secs_f64(sizes.maxrate_budget_seconds);
    let mut steps = 0_u32;
    let mut best: Option<(f64, Metrics)> = None;
    let mut lowest_failed: Option<(f64, bool)> = None;
    let mut rate = round_rate(sizes.maxrate_start_rate);
    // Phase 1: double (or halve) until the verdict changes.
    for _ in 0..=sizes.maxrate_doublings {
        if started.elapsed() >= budget {
            break;
        }
        steps += 1;
        match step(rate).await? {
            Verdict::Passed(metrics) => {
                best = Some((rate, metrics));
                if lowest_failed.is_some() {
                    break;
                }
                rate = round_rate(rate * 2.0);
            }
            Verdict::Failed { check } => {
                lowest_failed = Some((rate, check));
                if best.is_some() || rate <= RATE_GRAIN {
                    break;
                }
                rate = round_rate(rate / 2.0);
            }
        }
    }
    // Phase 2: bisect between the highest pass and the lowest failure.
    for _ in 0..sizes.maxrate_bisections {
        let (Some((passed, _)), Some((failed, _))) = (&best, &lowest_failed) else {
            break;
        };
        let middle = round_rate((passed + failed) / 2.0);
        if middle <= *passed || middle >= *failed || started.elapsed() >= budget {
            break;
        }
        steps += 1;
        match step(middle).await? {
            Verdict::Passed(metrics) => best = Some((middle, metrics)),
            Verdict::Failed { check } => lowest_failed = Some((middle, check)),
        }
    }
    let Some((max_rate, mut metrics)) = best else {
        bail!(
            "no rate sustained in {steps} steps (lowest tried {} updates/s)",
            lowest_failed.map_or(rate, |(failed, _)| failed)
        );
    };
    metrics.insert("max_rate".into(), max_rate);
    metrics.insert("steps".into(), f64::from(steps));
    metrics.insert("search_s".into(), started.elapsed().as_secs_f64());
    match lowest_failed {
        Some((failed, check)) => {
            metrics.insert("failed_rate".into(), failed);
            metrics.insert("failed_check".into(), if check { 1.0 } else { 0.0 });
            metrics.insert("capped".into(), 0.0);
        }
        // Every step passed: the search ran out of steps or time, so the
        // result is a lower bound.
        None => {
            metrics.insert("capped".into(), 1.0);
        }
    }
    Ok(metrics)
}

fn round_rate(rate: f64) -> f64 {
    ((rate / RATE_GRAIN).round() * RATE_GRAIN).max(RATE_GRAIN)
}

/// Logs why a step failed; its verdict.
fn failed(kind: ServerKind, rate: f64, reason: &str, check: bool) -> Verdict {
    eprintln!(
        "maxrate    {:<28} {rate} updates/s not sustained: {}",
        kind.label(),
        reason.replace('\n', " ")
    );
    Verdict::Failed { check }
}

/// One step: a fresh server, `rate` updates/s for the step's length.
/// Fails only if the server cannot be started or measured.
async fn step(
    kind: ServerKind,
    sizes: &Sizes,
    programs: &Programs,
    scratch: &Path,
    rate: f64,
) -> anyhow::Result<Verdict> {
    let mut server = servers::start(kind, programs, scratch)?;
    let driver_before = crate::procstat::cpu_seconds(std::process::id())?;
    let cpu_before = server.cpu_seconds()?;
    let started = Instant::now();
    let outcome = offer(&server, sizes.maxrate_docs, rate, sizes.maxrate_seconds).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu_before;
    let driver_cpu = crate::procstat::cpu_seconds(std::process::id())? - driver_before;
    let (histogram, achieved, updates) = match outcome {
        Ok(measured) => measured,
        Err(error) => {
            let check = error.downcast_ref::<session::DidNotKeepUp>().is_none();
            // A failed check is kept for a post-mortem; being too slow is
            // what the search looks for.
            let error = if check {
                let logs = server.keep_logs().display().to_string();
                error.context(format!("server logs kept in {logs}"))
            } else {
                error
            };
            return Ok(failed(kind, rate, &format!("{error:#}"), check));
        }
    };
    let p99_ms = histogram.value_at_quantile(0.99) as f64 / 1_000.0;
    if p99_ms > MAX_P99_MS {
        return Ok(failed(kind, rate, &format!("p99 {p99_ms} ms"), false));
    }
    if achieved < MIN_ACHIEVED * rate {
        let reason = format!("the writers achieved {achieved:.0} updates/s");
        return Ok(failed(kind, rate, &reason, false));
    }
    let mut metrics = Metrics::new();
    metrics.insert("achieved_rate".into(), achieved);
    metrics.insert(
        "p50_ms".into(),
        histogram.value_at_quantile(0.50) as f64 / 1_000.0,
    );
    metrics.insert("p99_ms".into(), p99_ms);
    metrics.insert("server_cpu_s".into(), cpu);
    metrics.insert("server_cores".into(), cpu / wall);
    metrics.insert("cpu_us_per_update".into(), cpu * 1e6 / updates);
    metrics.insert("driver_cpu_s".into(), driver_cpu);
    metrics.insert("driver_cores".into(), driver_cpu / wall);
    Ok(Verdict::Passed(metrics))
}

/// Offers `rate` updates/s over `docs` documents for `seconds` and checks
/// the run; the readers' latencies, the rate the writers achieved and the
/// updates sent.
async fn offer(
    server: &RunningServer,
    docs: usize,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, f64, f64)> {
    let per_doc_rate = rate / docs as f64;
    let updates_per_doc = (per_doc_rate * seconds).ceil().max(1.0) as u32;
    let sending = Duration::from_secs_f64(f64::from(updates_per_doc) / per_doc_rate);
    let run_id = crate::clock::nanos();
    let mut tasks = Vec::with_capacity(docs);
    for doc in 0..docs {
        let plan = Plan {
            doc: format!("maxrate-{run_id}-{doc}"),
            writers: 1,
            readers: 1,
            writer_endpoint: 0,
            reader_endpoint: 0,
            updates_per_writer: updates_per_doc,
            total_rate: per_doc_rate,
            deadline: sending + STEP_DRAIN,
        };
        let endpoints = server.endpoints.clone();
        tasks.push(tokio::spawn(async move {
            session::run(&endpoints, &plan).await
        }));
    }
    let mut latency = hdrhistogram::Histogram::<u64>::new(3).context("histogram")?;
    let mut achieved = 0.0;
    let mut first_error = None;
    for task in tasks {
        match task.await.context("maxrate task")? {
            Ok(outcome) => {
                latency.add(&outcome.latency_us).context("merge")?;
                // The first update goes at once, the last after
                // `updates - 1` periods: one period is added back.
                let span = outcome.sending.as_secs_f64() + 1.0 / per_doc_rate;
                achieved += f64::from(updates_per_doc) / span;
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    Ok((latency, achieved, f64::from(updates_per_doc) * docs as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mode;

    /// The search against a made-up server that sustains `limit`: the
    /// search's result and the rates it tried.
    async fn search_limit(limit: f64, sizes: &Sizes) -> (anyhow::Result<Metrics>, Vec<f64>) {
        let mut tried = Vec::new();
        let result = search_with(sizes, |rate| {
            tried.push(rate);
            let verdict = if rate <= limit {
                Verdict::Passed(Metrics::new())
            } else {
                Verdict::Failed { check: false }
            };
            std::future::ready(Ok(verdict))
        })
        .await;
        (result, tried)
    }

    #[tokio::test]
    async fn doubles_then_bisects_between_the_pass_and_the_failure() {
        let sizes = Sizes::for_mode(Mode::Full, None);
        let (result, tried) = search_limit(5_000.0, &sizes).await;
        let metrics = result.unwrap();
        assert_eq!(
            tried,
            vec![
                1_000.0, 2_000.0, 4_000.0, 8_000.0, 6_000.0, 5_000.0, 5_500.0
            ]
        );
        assert_eq!(metrics["max_rate"], 5_000.0);
        assert_eq!(metrics["failed_rate"], 5_500.0);
        assert_eq!(metrics["capped"], 0.0);
        assert_eq!(metrics["steps"], 7.0);
    }

    #[tokio::test]
    async fn halves_when_the_first_rate_fails() {
        let sizes = Sizes::for_mode(Mode::Full, None);
        let (result, tried) = search_limit(300.0, &sizes).await;
        assert_eq!(result.unwrap()["max_rate"], 290.0);
        assert_eq!(tried, vec![1_000.0, 500.0, 250.0, 380.0, 320.0, 290.0]);
        assert!(tried.len() <= (sizes.maxrate_doublings + sizes.maxrate_bisections + 1) as usize);
    }

    #[tokio::test]
    async fn a_server_that_passes_every_step_is_a_lower_bound() {
        let sizes = Sizes::for_mode(Mode::Short, None);
        let (result, tried) = search_limit(f64::MAX, &sizes).await;
        let metrics = result.unwrap();
        assert_eq!(tried.len(), sizes.maxrate_doublings as usize + 1);
        assert_eq!(metrics["capped"], 1.0);
        assert_eq!(metrics["max_rate"], *tried.last().unwrap());
    }

    #[tokio::test]
    async fn nothing_sustained_fails_the_search_in_bounded_steps() {
        let sizes = Sizes::for_mode(Mode::Full, None);
        let (result, tried) = search_limit(0.0, &sizes).await;
        assert!(result.is_err());
        assert!(
            tried.len() <= sizes.maxrate_doublings as usize + 1,
            "{tried:?}"
        );
    }
}
