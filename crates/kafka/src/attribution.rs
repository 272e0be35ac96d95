//! Who wrote an update, in its record's headers: `weft-author` (the
//! token's `sub`, or `anonymous` on an open node) and `weft-at-ms` (the
//! publishing node's clock, milliseconds since the Unix epoch, decimal).
//! The node is the envelope's `origin_node`, already in every record.
//!
//! Headers, not envelope fields: they cost nothing to readers that skip
//! them, and a record written before Weft recorded authors simply has none
//! ([`attribution_of`] answers `None` for each part; the record loads as
//! before).

use std::sync::Arc;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use weft_sync::Record;

/// The header naming an update's author.
pub const AUTHOR_HEADER: &str = "weft-author";
/// The header holding when the publishing node accepted the update.
pub const AT_MS_HEADER: &str = "weft-at-ms";

/// `headers` plus the attribution of `record` at `at_ms` (nothing added for
/// a record without an author: ephemeral records, deletions).
pub(crate) fn with_attribution(headers: OwnedHeaders, record: &Record, at_ms: i64) -> OwnedHeaders {
    let Some(author) = record.author.as_deref() else {
        return headers;
    };
    let at = at_ms.to_string();
    headers
        .insert(Header {
            key: AUTHOR_HEADER,
            value: Some(author.as_bytes()),
        })
        .insert(Header {
            key: AT_MS_HEADER,
            value: Some(at.as_bytes()),
        })
}

/// The author and time a record's headers carry; `None` for a part the
/// record lacks or that does not decode (a record from before attribution,
/// or another producer's).
pub fn attribution_of(headers: Option<&impl Headers>) -> (Option<Arc<str>>, Option<i64>) {
    let Some(headers) = headers else {
        return (None, None);
    };
    let mut author = None;
    let mut at_ms = None;
    for header in headers.iter() {
        let Some(value) = header.value else { continue };
        if header.key == AUTHOR_HEADER {
            author = std::str::from_utf8(value).ok().map(Arc::from);
        } else if header.key == AT_MS_HEADER {
            at_ms = std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse().ok());
        }
    }
    (author, at_ms)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use weft_sync::RecordKind;

    use super::*;

    fn update(author: Option<&str>) -> Record {
        Record {
            doc: Arc::from("doc"),
            kind: RecordKind::Update,
            payload: Bytes::from_static(b"\x00\x00"),
            origin_session: 1,
            author: author.map(Arc::from),
            span: tracing::Span::none(),
        }
    }

    #[test]
    fn an_attributed_record_carries_its_author_and_time() {
        let headers = with_attribution(OwnedHeaders::new(), &update(Some("alice")), 1_234);
        let (author, at_ms) = attribution_of(Some(&headers));
        assert_eq!(author.as_deref(), Some("alice"));
        assert_eq!(at_ms, Some(1_234));
    }

    #[test]
    fn a_record_from_before_attribution_has_none_and_still_reads() {
        let trace_only = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(b"00-0123456789abcdef0123456789abcdef-0123456789abcdef-01".as_slice()),
        });
        assert_eq!(attribution_of(Some(&trace_only)), (None, None));
        assert_eq!(attribution_of(None::<&OwnedHeaders>), (None, None));
        let unattributed = with_attribution(OwnedHeaders::new(), &update(None), 1);
        assert_eq!(unattributed.count(), 0);
    }

    #[test]
    fn a_malformed_time_is_ignored_not_fatal() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: AUTHOR_HEADER,
                value: Some(b"bob".as_slice()),
            })
            .insert(Header {
                key: AT_MS_HEADER,
                value: Some(b"soon".as_slice()),
            });
        let (author, at_ms) = attribution_of(Some(&headers));
        assert_eq!(author.as_deref(), Some("bob"));
        assert_eq!(at_ms, None);
    }
}
