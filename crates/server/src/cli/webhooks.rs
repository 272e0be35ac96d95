//! The flags of webhooks (the change feed, `weft serve`).

use std::time::Duration;

use clap::Args;

use super::duration::parse_duration;

/// Webhooks: each durable change POSTed to every `--webhook-url`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// POST each document change to this URL (repeatable; comma-separated
    /// in the variable). https, or plain http to a loopback address.
    #[arg(long, env = "WEFT_WEBHOOK_URL", value_delimiter = ',')]
    pub webhook_url: Vec<String>,

    /// The HMAC-SHA256 key of the `Weft-Signature` header (required with
    /// `--webhook-url`).
    #[arg(long, env = "WEFT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// A document's changes this close together become one event.
    #[arg(long, env = "WEFT_WEBHOOK_DEBOUNCE", default_value = "2s", value_parser = parse_duration)]
    pub webhook_debounce: Duration,

    /// ...but a document that keeps changing sends an event at least this
    /// often.
    #[arg(long, env = "WEFT_WEBHOOK_MAX_DELAY", default_value = "10s", value_parser = parse_duration)]
    pub webhook_max_delay: Duration,

    /// One POST may take this long (to the answer's head) before it counts
    /// as failed and is retried.
    #[arg(long, env = "WEFT_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// Add the document's root types, as they are after the event, to its
    /// body as JSON: `text:NAME`, `map:NAME`, `array:NAME` or `xml:NAME`
    /// (repeatable; comma-separated in the variable).
    #[arg(long, env = "WEFT_WEBHOOK_ROOTS", value_delimiter = ',')]
    pub webhook_roots: Vec<String>,

    /// An event is retried (exponential backoff with jitter) this long,
    /// then stored as a dead letter.
    #[arg(long, env = "WEFT_WEBHOOK_RETRY_FOR", default_value = "24h", value_parser = parse_duration)]
    pub webhook_retry_for: Duration,
}
