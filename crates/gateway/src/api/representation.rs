//! What a `GET` of a document answers with: the representation the
//! `Accept` header prefers, and the root types the query names.

use axum::http::{HeaderMap, header};
use weft_sync::RootKind;

use crate::error::ApiError;

/// Most root types one JSON read may name: each is a lookup in the
/// document; a real editor has a handful.
const MAX_ROOTS: usize = 64;

/// What a `GET` of a document answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Representation {
    /// `application/json`: the named root types.
    Json,
    /// `application/octet-stream`: the whole state as a Yjs v1 update.
    Update,
}

/// The representation the `Accept` header prefers (`None`: none we serve,
/// 406). No header, or an empty one, takes JSON.
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Representation> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    if values.iter().all(|value| value.trim().is_empty()) {
        return Some(Representation::Json);
    }
    let mut best: Option<(f32, Representation)> = None;
    for range in values.iter().flat_map(|value| value.split(',')) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|parameter| parameter.trim().strip_prefix("q="))
            .find_map(|value| value.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if quality <= 0.0 || quality.is_nan() {
            continue;
        }
        let representation = match media.as_str() {
            "application/octet-stream" => Representation::Update,
            "application/json" | "application/*" | "*/*" => Representation::Json,
            _ => continue,
        };
        if best.is_none_or(|(best_quality, _)| quality > best_quality) {
            best = Some((quality, representation));
        }
    }
    best.map(|(_, representation)| representation)
}

/// The root types `?text=`, `?map=`, `?array=`, `?xml=` name (repeatable).
pub(crate) fn roots_asked(query: &[(String, String)]) -> Result<Vec<(RootKind, String)>, ApiError> {
    let mut roots: Vec<(RootKind, String)> = Vec::new();
    for (key, value) in query {
        let kind = match key.as_str() {
            "text" => RootKind::Text,
            "map" => RootKind::Map,
            "array" => RootKind::Array,
            "xml" => RootKind::XmlFragment,
            _ => continue,
        };
        if value.is_empty() {
            return Err(ApiError::bad_request("a root type name is not empty"));
        }
        if roots.contains(&(kind, value.clone())) {
            continue;
        }
        roots.push((kind, value.clone()));
        if roots.len() > MAX_ROOTS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_ROOTS} root types per request"
            )));
        }
    }
    Ok(roots)
}
