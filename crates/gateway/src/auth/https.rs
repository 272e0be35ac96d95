//! The HTTP client Weft uses to reach an identity provider's key set and a
//! permission service: rustls, the system's trusted roots (which honour
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`) plus an optional PEM bundle, no
//! redirects, a timeout, and bounded answers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Answers larger than this are refused: a key set is a few KiB, a
/// permission answer a few bytes.
pub(crate) const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Why a client or a URL could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpsSetupError {
    /// Not a URL.
    #[error("not a URL: {0}")]
    Url(#[source] url::ParseError),
    /// Plain http to a host that is not a loopback address.
    #[error(
        "plain http is allowed only to a loopback address (127.0.0.0/8, ::1, localhost); use https"
    )]
    PlainHttp,
    /// Another scheme than http or https.
    #[error("the scheme must be https (or http to a loopback address)")]
    Scheme,
    /// The CA bundle holds no certificate, or one that does not parse.
    #[error("no usable PEM certificate in the CA file")]
    Ca,
    /// rustls or reqwest refused to build the client.
    #[error("build the HTTPS client")]
    Client(#[source] reqwest::Error),
    /// rustls refused its own configuration.
    #[error("configure TLS")]
    Tls(#[source] rustls::Error),
}

/// Checks that `url` is https, or http to a loopback address (a sidecar).
pub fn check_url(url: &str) -> Result<Url, HttpsSetupError> {
    let parsed = Url::parse(url).map_err(HttpsSetupError::Url)?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        "http" => Err(HttpsSetupError::PlainHttp),
        _ => Err(HttpsSetupError::Scheme),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A client trusting the system's roots and the certificates of `ca_pem`
/// (a PEM bundle), with `timeout` on each whole request.
pub fn client(
    ca_pem: Option<&[u8]>,
    timeout: Duration,
) -> Result<reqwest::Client, HttpsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(error = %error, "a system root certificate could not be read");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(pem) = ca_pem {
        let mut added = 0_usize;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|_| HttpsSetupError::Ca)?;
            roots.add(certificate).map_err(|_| HttpsSetupError::Ca)?;
            added += 1;
        }
        if added == 0 {
            return Err(HttpsSetupError::Ca);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(HttpsSetupError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(HttpsSetupError::Client)
}

/// Why an answer could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting, TLS, the timeout, or reading the body.
    #[error("request failed")]
    Request(#[source] reqwest::Error),
    /// Not a 2xx.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// Over `MAX_ANSWER_BYTES`.
    #[error("answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    /// Not the JSON expected.
    #[error("answer is not the JSON expected")]
    Json(#[source] serde_json::Error),
}

/// Sends `request` and reads a JSON answer of at most [`MAX_ANSWER_BYTES`].
pub(crate) async fn json_answer<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, FetchError> {
    let mut response = request.send().await.map_err(FetchError::Request)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|length| length > MAX_ANSWER_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(FetchError::Request)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(FetchError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_plain_http_only_on_loopback() {
        assert!(check_url("https://idp.example.com/jwks").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://127.9.9.9/jwks").is_ok());
        assert!(check_url("http://[::1]:80/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(matches!(
            check_url("http://idp.example.com/jwks"),
            Err(HttpsSetupError::PlainHttp)
        ));
        assert!(matches!(
            check_url("http://10.0.0.1/jwks"),
            Err(HttpsSetupError::PlainHttp)
        ));
        assert!(matches!(
            check_url("ftp://127.0.0.1/jwks"),
            Err(HttpsSetupError::Scheme)
        ));
        assert!(matches!(
            check_url("not a url"),
            Err(HttpsSetupError::Url(_))
        ));
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        assert!(matches!(
            client(Some(b"not a certificate"), Duration::from_secs(1)),
            Err(HttpsSetupError::Ca)
        ));
        assert!(client(None, Duration::from_secs(1)).is_ok());
    }
}
