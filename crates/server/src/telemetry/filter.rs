//! A log filter whose decision is never cached for a callsite.

use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber, span};
use tracing_subscriber::layer::{Context, Filter};

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
pub(super) struct Rechecked<F>(pub(super) F);

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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::callsite::Callsite;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;
    use tracing_subscriber::fmt::MakeWriter;

    use tracing::Level;
    use tracing::subscriber::Interest;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

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
