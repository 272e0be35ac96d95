//! Trace context across Kafka: the span that publishes a record puts its
//! W3C context in the record's `traceparent` (and `tracestate`) headers; the
//! span that consumes it on another node takes that context as its parent,
//! so one edit is one trace from the writer's node to every reader's.
//!
//! Both go through the global text-map propagator, which the binary sets to
//! W3C trace context when traces are exported; without it nothing is
//! injected and a record carries a fresh, unrelated `traceparent`.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::envelope::{TRACEPARENT_HEADER, new_traceparent};

/// The headers of a record published inside `span`.
pub(crate) fn headers_for(span: &Span) -> OwnedHeaders {
    let mut fields = Fields::default();
    if !span.is_disabled() {
        let context = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut fields);
        });
    }
    if !fields.0.contains_key(TRACEPARENT_HEADER) {
        fields
            .0
            .insert(TRACEPARENT_HEADER.to_owned(), new_traceparent());
    }
    let mut headers = OwnedHeaders::new_with_capacity(fields.0.len());
    for (key, value) in &fields.0 {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

/// Makes the context in `headers` (if any) the parent of `span`.
pub(crate) fn continue_trace(span: &Span, headers: Option<&impl Headers>) {
    let Some(headers) = headers else { return };
    if span.is_disabled() {
        return;
    }
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&RecordHeaders(headers))
    });
    // Fails only if the span was already started elsewhere; it was not.
    let _ = span.set_parent(context);
}

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct RecordHeaders<'a, H>(&'a H);

impl<H: Headers> Extractor for RecordHeaders<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|header| header.key.eq_ignore_ascii_case(key))
            .and_then(|header| header.value)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|header| header.key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untraced_record_still_carries_a_traceparent() {
        let headers = headers_for(&Span::none());
        let found = (0..headers.count())
            .map(|index| headers.get(index))
            .find(|header| header.key == TRACEPARENT_HEADER)
            .and_then(|header| header.value)
            .map(|value| std::str::from_utf8(value).map(str::to_owned));
        let Some(Ok(value)) = found else {
            panic!("no traceparent header");
        };
        assert_eq!(value.len(), 55, "{value}");
    }
}
