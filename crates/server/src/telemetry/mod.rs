//! Logs and traces.
//!
//! Logs go to stderr, pretty or JSON (`--log-format`), filtered by `--log`.
//! A line written inside a traced span carries that span's trace id
//! (`trace_id=...` in pretty lines, a `trace_id` field in JSON), so a log
//! line leads to its trace and back.
//!
//! Traces are exported with OTLP when an endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! and `OTEL_SDK_DISABLED` is not `true`. Everything else is the standard
//! `OTEL_*` set, read by the OpenTelemetry SDK: protocol (`grpc` or
//! `http/protobuf`), service name (default `weft`), resource attributes,
//! sampler, batch sizes. The resource also says `service.instance.id` (the
//! node id) and `service.version`. Spans are batched and exported from a
//! task of the runtime; a full queue drops spans rather than block a
//! session. [`Telemetry::shutdown`] flushes what is queued.
//!
//! Which spans: Weft's own (`weft_*` targets), at DEBUG and above, whatever
//! `--log` says, since the hot-path spans (one update's apply, publish,
//! consume, broadcast) are DEBUG so that the log stays quiet; events at INFO
//! and above inside them become span events.
//!
//! # Layout
//!
//! - `otlp`: the `OTEL_*` settings and the span exporter.
//! - `filter`: the log filter that never caches a decision.
//! - `format`: the trace id on each log line.

mod filter;
mod format;
mod otlp;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use self::filter::Rechecked;
use self::format::TraceIdFormat;
use self::otlp::{Protocol, otlp_endpoint, otlp_protocol, tracer_provider};
use crate::cli::{LogArgs, LogFormat};

/// The filter when neither `--log`/`WEFT_LOG` nor `RUST_LOG` is set.
const DEFAULT_FILTER: &str = "info";

/// What must be flushed when the process ends.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued, waiting at most the exporter's
    /// timeout. Called last, after the node drained.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("weft: flushing traces failed: {error}"),
            Err(error) => eprintln!("weft: flushing traces failed: {error}"),
        }
    }
}

/// Installs the global subscriber: logs always, traces when configured.
/// Must run inside the tokio runtime (the span exporter is one of its
/// tasks). `instance` is the node id (or the worker's host name).
///
/// Fails, naming the variable, on an `OTEL_*` setting that cannot work.
pub fn init(args: &LogArgs, instance: &str) -> anyhow::Result<Telemetry> {
    let text = args
        .filter
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    let (filter, bad_filter) = match EnvFilter::try_new(&text) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    let provider = tracer_provider(instance)?;
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("weft"))
            .with_filter(filter_fn(traced))
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = TraceIdFormat {
        inner: tracing_subscriber::fmt::format(),
        json: args.log_format == LogFormat::Json,
    };
    let fmt_layer = tracing_subscriber::fmt::layer()
        .with_span_events(FmtSpan::NONE)
        .with_ansi(ansi && args.log_format == LogFormat::Pretty)
        .with_writer(std::io::stderr);
    let filter = Rechecked(filter);
    let registry = tracing_subscriber::registry().with(otel_layer);
    match args.log_format {
        LogFormat::Pretty => registry
            .with(fmt_layer.event_format(format).with_filter(filter))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt_layer
                    .json()
                    .flatten_event(true)
                    .map_event_format(|json| TraceIdFormat {
                        inner: json,
                        json: true,
                    })
                    .with_filter(filter),
            )
            .try_init(),
    }
    .context("install the log subscriber")?;
    if let Some(error) = bad_filter {
        tracing::warn!(filter = %text, error = %error, "invalid --log / WEFT_LOG filter; using info");
    }
    if provider.is_some() {
        tracing::info!(
            endpoint = %otlp_endpoint().unwrap_or_default(),
            protocol = %otlp_protocol().unwrap_or(Protocol::HttpProtobuf),
            "exporting traces with OTLP"
        );
    }
    Ok(Telemetry { provider })
}

/// Which spans and events go to OpenTelemetry: Weft's own spans from DEBUG,
/// its events from INFO.
fn traced(metadata: &Metadata<'_>) -> bool {
    if !metadata.target().starts_with("weft") {
        return false;
    }
    if metadata.is_span() {
        *metadata.level() <= Level::DEBUG
    } else {
        *metadata.level() <= Level::INFO
    }
}
