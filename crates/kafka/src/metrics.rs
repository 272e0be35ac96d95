//! The Kafka bus's own metrics, as a Prometheus collector the node
//! registers beside the others: the bus's counters (`Counters`) and its
//! live consumer's statistics ([`LiveStats`]: lag and fetch totals), read
//! at each scrape.
//!
//! Names are given without the node's `weft_` prefix (the registry adds
//! it); counters get the `_total` suffix when encoded.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::context::LiveStats;
use crate::counters::{Counters, FetchTotals, Fetched};

/// A handle on a [`KafkaBus`](crate::KafkaBus)'s metrics: cheap to clone,
/// reads the bus's values when encoded.
#[derive(Debug, Clone)]
pub struct KafkaMetrics {
    counters: Arc<Counters>,
    live_stats: Arc<LiveStats>,
}

impl KafkaMetrics {
    pub(crate) fn new(counters: Arc<Counters>, live_stats: Arc<LiveStats>) -> Self {
        Self {
            counters,
            live_stats,
        }
    }

    /// The bus's event counters: name, help, value.
    fn counts(&self) -> [(&'static str, &'static str, u64); 6] {
        let counters = &self.counters;
        [
            (
                "bus_records_malformed",
                "Bus records skipped because they did not decode",
                counters.malformed.load(Ordering::Relaxed),
            ),
            (
                "bus_ephemeral_lost",
                "Awareness records and heartbeats that could not be published",
                counters.ephemeral_lost.load(Ordering::Relaxed),
            ),
            (
                "bus_producers_replaced",
                "Producers replaced after a failed publish",
                counters.producers_replaced.load(Ordering::Relaxed),
            ),
            (
                "bus_consumers_replaced",
                "Live consumers replaced after they stalled",
                counters.consumers_replaced.load(Ordering::Relaxed),
            ),
            (
                "bus_live_gaps",
                "Ranges of offsets the live consumer skipped, read again and delivered",
                counters.live_gaps.load(Ordering::Relaxed),
            ),
            (
                "bus_replay_passes",
                "Passes over a partition that replayed documents being loaded or repaired",
                counters.replay_passes.load(Ordering::Relaxed),
            ),
        ]
    }
}

impl Collector for KafkaMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in self.counts() {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        // Copies, so that librdkafka's statistics callback never waits for
        // a scrape.
        let fetched = self.live_stats.fetched.lock().clone();
        encode_fetched(&fetched, &mut encoder)?;
        let lags = self.live_stats.lag.lock().clone();
        if !lags.is_empty() {
            let mut family = encoder.encode_descriptor(
                "bus_consumer_lag",
                "Records between this node's live consumer and the end of each partition (librdkafka statistics, every 5 s)",
                None,
                MetricType::Gauge,
            )?;
            for ((topic, partition), lag) in lags {
                let labels = [("topic", topic), ("partition", partition.to_string())];
                ConstGauge::new(lag).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The live consumer's fetch totals: what it pulled from the log, the
/// number that `--kafka-consume held` and sticky routing shrink.
fn encode_fetched(
    fetched: &FetchTotals,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    type Pick = fn(&Fetched) -> u64;
    let families: [(&str, &str, Pick); 2] = [
        (
            "bus_fetched_bytes",
            "Key and value bytes of the records this node's live consumer fetched, per topic (librdkafka statistics, every 5 s)",
            |counts| counts.bytes,
        ),
        (
            "bus_fetched_records",
            "Records this node's live consumer fetched, per topic, wanted or not (librdkafka statistics, every 5 s)",
            |counts| counts.records,
        ),
    ];
    for (name, help, pick) in families {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (topic, counts) in &fetched.topics {
            let labels = [("topic", topic.clone())];
            ConstCounter::new(pick(counts)).encode(family.encode_family(&labels)?)?;
        }
    }
    let received = ConstCounter::new(fetched.received_bytes);
    received.encode(encoder.encode_descriptor(
        "bus_received_bytes",
        "Bytes the brokers sent this node's live consumer, framing and empty fetches included (librdkafka statistics, every 5 s)",
        None,
        received.metric_type(),
    )?)
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    /// A registry with the node's prefix holding only the bus's collector,
    /// after some counting and one statistics report's worth of values.
    fn exposition() -> String {
        let counters = Arc::new(Counters::default());
        counters.malformed.store(3, Ordering::Relaxed);
        counters.live_gaps.store(1, Ordering::Relaxed);
        let live_stats = Arc::new(LiveStats::default());
        {
            let mut fetched = live_stats.fetched.lock();
            fetched.topics.insert(
                "weft-updates".to_owned(),
                Fetched {
                    bytes: 1_200,
                    records: 7,
                },
            );
            fetched.received_bytes = 4_096;
        }
        live_stats
            .lag
            .lock()
            .insert(("weft-updates".to_owned(), 2), 5);
        let mut registry = Registry::with_prefix("weft");
        registry.register_collector(Box::new(KafkaMetrics::new(counters, live_stats)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }

    #[test]
    fn encodes_the_counters_lag_and_fetch_totals_under_their_names_and_labels() {
        let text = exposition();
        let samples: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        for expected in [
            "weft_bus_records_malformed_total 3",
            "weft_bus_ephemeral_lost_total 0",
            "weft_bus_producers_replaced_total 0",
            "weft_bus_consumers_replaced_total 0",
            "weft_bus_live_gaps_total 1",
            "weft_bus_replay_passes_total 0",
            "weft_bus_consumer_lag{topic=\"weft-updates\",partition=\"2\"} 5",
            "weft_bus_fetched_bytes_total{topic=\"weft-updates\"} 1200",
            "weft_bus_fetched_records_total{topic=\"weft-updates\"} 7",
            "weft_bus_received_bytes_total 4096",
        ] {
            assert!(samples.contains(&expected), "{expected} in:\n{text}");
        }
        for (family, kind) in [
            ("weft_bus_records_malformed", "counter"),
            ("weft_bus_consumer_lag", "gauge"),
            ("weft_bus_fetched_bytes", "counter"),
            ("weft_bus_fetched_records", "counter"),
            ("weft_bus_received_bytes", "counter"),
        ] {
            let type_line = format!("# TYPE {family} {kind}");
            assert!(text.lines().any(|line| line == type_line), "{type_line}");
        }
        assert!(
            text.contains("# HELP weft_bus_consumer_lag Records between this node's live consumer and the end of each partition"),
            "{text}"
        );
    }

    #[test]
    fn no_lag_family_before_the_first_statistics_report() {
        let metrics = KafkaMetrics::new(Arc::default(), Arc::default());
        let mut registry = Registry::with_prefix("weft");
        registry.register_collector(Box::new(metrics));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(!text.contains("weft_bus_consumer_lag"), "{text}");
        assert!(text.contains("weft_bus_received_bytes_total 0"), "{text}");
    }
}
