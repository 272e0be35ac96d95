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

use std::fmt;

use anyhow::{Context as _, bail};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber, span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::{FmtSpan, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::{LogArgs, LogFormat};

/// The filter when neither `--log`/`WEFT_LOG` nor `RUST_LOG` is set.
const DEFAULT_FILTER: &str = "info";

/// The service name when neither `OTEL_SERVICE_NAME` nor a `service.name`
/// in `OTEL_RESOURCE_ATTRIBUTES` says otherwise.
const SERVICE_NAME: &str = "weft";

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

/// A per-layer filter whose decision is taken again for every event and
/// span, never cached as "always" for a callsite.
///
/// tracing-subscriber (0.3.23) keeps, per thread, which per-layer filters
/// turned down the event being checked. When every filter turns one down
/// (a `log` record of another crate under `--log weft=info`, say), nothing
/// clears that mark, and the next event on the thread whose callsite was
/// cached as "always" skips the check and is dropped by the mark: log lines
/// went missing at random. A callsite that is never cached as "always" is
/// checked every time, and each check overwrites the mark.
struct Rechecked<F>(F);

impl<F: Filter<S>, S: Subscriber> Filter<S> for Rechecked<F> {
    fn enabled(&self, metadata: &Metadata<'_>, context: &Context<'_, S>) -> bool {
        self.0.enabled(metadata, context)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(metadata);
        if interest.is_always() {
            Interest::sometimes()
        } else {
            interest
        }
    }

    fn event_enabled(&self, event: &Event<'_>, context: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, context)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, context: Context<'_, S>) {
        self.0.on_new_span(attrs, id, context);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, context: Context<'_, S>) {
        self.0.on_record(id, values, context);
    }

    fn on_enter(&self, id: &span::Id, context: Context<'_, S>) {
        self.0.on_enter(id, context);
    }

    fn on_exit(&self, id: &span::Id, context: Context<'_, S>) {
        self.0.on_exit(id, context);
    }

    fn on_close(&self, id: span::Id, context: Context<'_, S>) {
        self.0.on_close(id, context);
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl fmt::Display for Protocol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        })
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn otlp_endpoint() -> Option<String> {
    env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The configured protocol, or an error naming the variable.
fn otlp_protocol() -> anyhow::Result<Protocol> {
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = env(name) {
            return match value.trim() {
                "grpc" => Ok(Protocol::Grpc),
                "http/protobuf" => Ok(Protocol::HttpProtobuf),
                other => {
                    bail!("{name}={other:?} is not supported: use \"grpc\" or \"http/protobuf\"")
                }
            };
        }
    }
    Ok(Protocol::HttpProtobuf)
}

/// Checks the sampler variables the SDK would otherwise only warn about.
fn check_sampler() -> anyhow::Result<()> {
    let Some(sampler) = env("OTEL_TRACES_SAMPLER") else {
        return Ok(());
    };
    let sampler = sampler.trim();
    match sampler {
        "always_on" | "always_off" | "parentbased_always_on" | "parentbased_always_off" => Ok(()),
        "traceidratio" | "parentbased_traceidratio" => {
            let Some(arg) = env("OTEL_TRACES_SAMPLER_ARG") else {
                return Ok(()); // the SDK samples everything, per the spec
            };
            match arg.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(()),
                _ => bail!(
                    "OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio between 0 and 1 (for OTEL_TRACES_SAMPLER={sampler})"
                ),
            }
        }
        other => bail!(
            "OTEL_TRACES_SAMPLER={other:?} is not supported: use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
        ),
    }
}

/// The tracer provider when traces are configured, else `None`.
fn tracer_provider(instance: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    if env("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if let Some(exporter) = env("OTEL_TRACES_EXPORTER") {
        match exporter.trim() {
            "none" => return Ok(None),
            "otlp" => {}
            other => {
                bail!("OTEL_TRACES_EXPORTER={other:?} is not supported: use \"otlp\" or \"none\"")
            }
        }
    }
    let Some(endpoint) = otlp_endpoint() else {
        return Ok(None);
    };
    let protocol = otlp_protocol()?;
    check_sampler()?;
    let exporter = match protocol {
        Protocol::Grpc => SpanExporter::builder().with_tonic().build(),
        Protocol::HttpProtobuf => SpanExporter::builder().with_http().build(),
    }
    .with_context(|| {
        format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?}: build the OTLP exporter")
    })?;

    let mut resource = Resource::builder();
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| attrs.contains("service.name="));
    if !named {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let resource = resource
        .with_attributes([
            KeyValue::new("service.instance.id", instance.to_owned()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let processor = BatchSpanProcessor::builder(exporter, Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    Ok(Some(provider))
}

/// An event format that adds the current trace id to a line written inside
/// a traced span.
struct TraceIdFormat<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for TraceIdFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let Some(trace_id) = current_trace_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        // Format the line, then add the field: last on a pretty line,
        // first in a JSON object.
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        if self.json
            && let Some(rest) = line.strip_prefix('{')
        {
            return write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}");
        }
        match line.strip_suffix('\n') {
            Some(body) => writeln!(writer, "{body} trace_id={trace_id}"),
            None => write!(writer, "{line} trace_id={trace_id}"),
        }
    }
}

/// The trace id of the current span, if it is traced and sampled.
fn current_trace_id() -> Option<String> {
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::callsite::Callsite;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// A callsite of another crate, as tracing-log makes for a `log` record.
    struct Elsewhere;

    static ELSEWHERE: Elsewhere = Elsewhere;

    static ELSEWHERE_METADATA: Metadata<'static> = Metadata::new(
        "log record",
        "elsewhere",
        Level::INFO,
        None,
        None,
        None,
        FieldSet::new(&[], tracing::callsite::Identifier(&ELSEWHERE)),
        Kind::EVENT,
    );

    impl Callsite for Elsewhere {
        fn set_interest(&self, _: Interest) {}

        fn metadata(&self) -> &Metadata<'_> {
            &ELSEWHERE_METADATA
        }
    }

    #[test]
    fn a_line_after_an_event_every_filter_turned_down_is_still_written() {
        let captured = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(captured.clone())
            .with_filter(Rechecked(EnvFilter::new("weft=info")));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for round in 0..3 {
                // What `log::log_enabled!` of another crate does through
                // tracing-log: ask whether anyone wants a record, and emit
                // nothing.
                tracing::dispatcher::get_default(|dispatch| dispatch.enabled(&ELSEWHERE_METADATA));
                tracing::info!(round, "line after a turned-down record");
            }
        });
        let text = String::from_utf8(captured.0.lock().expect("not poisoned").clone())
            .expect("log lines are UTF-8");
        assert_eq!(
            text.matches("line after a turned-down record").count(),
            3,
            "every line written:\n{text}"
        );
    }
}
