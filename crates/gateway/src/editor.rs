//! The editor page: `GET /` and `GET /assets/{file}`.
//!
//! The page (CodeMirror 6 + y-codemirror.next over the Hocuspocus protocol,
//! and a history panel that calls the REST history routes; sources in
//! `web/`) is built by npm before cargo runs and compiled into the binary
//! from `web/dist`, so a node needs no files beside it. A binary compiled
//! before the page was built answers `/` with a JSON 404 that says how to
//! build it.
//!
//! Asset names are fixed (no content hash in the name), so every response
//! carries an `ETag` (the file's SHA-256) with `Cache-Control: no-cache`: a
//! browser revalidates and gets `304 Not Modified` until the binary changes.

use std::fmt::Write as _;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

use crate::error::ApiError;

#[derive(Embed)]
#[folder = "../../web/dist"]
#[allow_missing = true]
struct Assets;

/// What the page may load and connect to: its own origin only. Styles may
/// be inline because CodeMirror injects its theme as `<style>` elements.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Whether this binary was compiled with the editor page.
pub fn is_built() -> bool {
    Assets::get("index.html").is_some()
}

/// Whether `path` is one of the page's routes (`/`, `/index.html`,
/// `/assets/...`).
pub fn is_page_route(path: &str) -> bool {
    page_file(path).is_some()
}

fn page_file(path: &str) -> Option<&str> {
    match path {
        "/" | "/index.html" => Some("index.html"),
        _ => path
            .strip_prefix("/assets/")
            .filter(|name| !name.is_empty()),
    }
}

/// The response for a plain `GET`/`HEAD` of `path`, or `None` if `path` is
/// not one of the page's routes.
pub fn serve(path: &str, request_headers: &HeaderMap) -> Option<Response> {
    let file = page_file(path)?;
    let asset = if file == "index.html" {
        file.to_owned()
    } else {
        format!("assets/{file}")
    };
    let Some(embedded) = Assets::get(&asset) else {
        return Some(if file == "index.html" {
            ApiError::not_found(
                "this binary was compiled without the editor page; `make build` (or `make run`) builds web/ with npm first",
            )
            .into_response()
        } else {
            ApiError::not_found(format!("no asset {path}")).into_response()
        });
    };

    let etag = etag(&embedded.metadata.sha256_hash());
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    if not_modified {
        return Some((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    let mime = embedded.metadata.mimetype();
    let content_type = if mime.starts_with("text/") || mime.ends_with("javascript") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if file == "index.html" {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        // The page's URL may carry `?token=`; never hand it to another site.
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    Some((StatusCode::OK, headers, embedded.data.into_owned()).into_response())
}

fn etag(hash: &[u8; 32]) -> String {
    let mut tag = String::with_capacity(66);
    tag.push('"');
    for byte in hash {
        let _ = write!(tag, "{byte:02x}");
    }
    tag.push('"');
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_quoted_hex() {
        let tag = etag(&[0xab; 32]);
        assert_eq!(tag.len(), 66);
        assert!(tag.starts_with("\"abab") && tag.ends_with("ab\""));
    }

    #[test]
    fn routes_outside_the_page_are_not_served() {
        let headers = HeaderMap::new();
        assert!(serve("/healthz", &headers).is_none());
        assert!(serve("/assets/", &headers).is_none());
        assert!(serve("/assetsx", &headers).is_none());
    }

    #[test]
    fn an_unknown_asset_is_a_json_404() {
        let response = serve("/assets/../Cargo.toml", &HeaderMap::new()).expect("a page route");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_revalidates_by_etag() {
        let Some(first) = serve("/", &HeaderMap::new()) else {
            panic!("/ is a page route");
        };
        if !is_built() {
            assert_eq!(first.status(), StatusCode::NOT_FOUND);
            return;
        }
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        let second = serve("/", &again).expect("a page route");
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
    }
}
