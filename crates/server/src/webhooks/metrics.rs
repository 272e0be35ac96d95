//! The webhooks' counters (`weft_webhook_*`). A leaf.

use prometheus_client::metrics::counter::Counter;

/// The webhooks' metrics.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    /// Events a target answered with a 2xx.
    pub delivered: Counter,
    /// Attempts that failed (an error status, a timeout, no connection).
    pub failed_attempts: Counter,
    /// Events given up on after `--webhook-retry-for` (stored as dead
    /// letters).
    pub dead_letters: Counter,
}

impl WebhookMetrics {
    /// Registers them (`weft_webhook_*`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "webhook_deliveries",
            "Webhook events a target answered with a 2xx",
            self.delivered.clone(),
        );
        registry.register(
            "webhook_failed_attempts",
            "Webhook POSTs that failed (error status, timeout, no connection) and will be retried or dead-lettered",
            self.failed_attempts.clone(),
        );
        registry.register(
            "webhook_dead_letters",
            "Webhook events given up on after --webhook-retry-for, stored as dead letters",
            self.dead_letters.clone(),
        );
    }
}
