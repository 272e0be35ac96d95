//! The node's producer, and replacing it after a failed publish.

use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use rdkafka::producer::FutureProducer;
use tracing::{info, warn};

use crate::config::{KafkaConfig, KafkaConfigError};
use crate::context::WeftContext;
use crate::counters::Counters;
use crate::tasks::BusTasks;

/// The producer in use and how many times it was replaced.
#[derive(Clone)]
pub(crate) struct Producer {
    /// The librdkafka client.
    pub(crate) client: FutureProducer<WeftContext>,
    /// Replacements before this one: a failed publish names the producer it
    /// used, so two failures of one producer replace it once.
    pub(crate) generation: u64,
}

/// The current producer, replaced after a publish failed.
pub(crate) struct Producers {
    current: Mutex<Producer>,
}

impl Producers {
    /// The first producer for `config`.
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self, KafkaConfigError> {
        Ok(Self {
            current: Mutex::new(Producer {
                client: new_producer(config)?,
                generation: 0,
            }),
        })
    }

    /// The producer to publish with.
    pub(crate) fn current(&self) -> Producer {
        self.current.lock().clone()
    }

    /// Replaces the producer after a publish failed, unless another caller
    /// already did. An idempotent producer keeps its producer id and
    /// sequence numbers across broker failures; a broker that lost that
    /// state (a restarted broker without it, a fatal idempotence error)
    /// would refuse it for good. A new producer starts a new sequence; the
    /// updates that failed are re-sent by their clients, and duplicates are
    /// harmless.
    pub(crate) fn renew(
        &self,
        config: &KafkaConfig,
        failed: u64,
        counters: &Counters,
        tasks: &BusTasks,
    ) {
        let replacement = match new_producer(config) {
            Ok(client) => client,
            Err(error) => {
                warn!(error = %error, "could not create a new producer; keeping the old one");
                return;
            }
        };
        let mut current = self.current.lock();
        if current.generation != failed {
            return;
        }
        let old = std::mem::replace(
            &mut *current,
            Producer {
                client: replacement,
                generation: failed + 1,
            },
        );
        drop(current);
        counters.producers_replaced.fetch_add(1, Ordering::Relaxed);
        info!(
            generation = failed + 1,
            "producer replaced after a failed publish"
        );
        // Dropping a producer flushes it, which may block: not on the
        // runtime. Nobody waits for it but the node's tracker.
        drop(tasks.spawn_blocking(move || drop(old)));
    }
}

fn new_producer(config: &KafkaConfig) -> Result<FutureProducer<WeftContext>, KafkaConfigError> {
    Ok(config
        .producer()
        .create_with_context(WeftContext::default())?)
}
