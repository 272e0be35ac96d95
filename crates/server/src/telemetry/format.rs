//! The current trace id on every log line written inside a traced span.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// An event format that adds the current trace id to a line written inside
/// a traced span.
pub(super) struct TraceIdFormat<F> {
    pub(super) inner: F,
    pub(super) json: bool,
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
