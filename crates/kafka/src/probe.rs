//! The start-up check of the TLS and SASL settings: one metadata request,
//! so that a wrong CA or a refused password stops the process at once with
//! a message naming the flag, instead of a node that never gets ready.
//!
//! A broker that does not answer at all is not this check's business: a
//! node waits for it (readiness says why), as it does in plaintext.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::warn;

use crate::config::KafkaConfig;
use crate::security::{SecurityError, setting};

/// How long the check waits for the brokers' answer. librdkafka reports a
/// failed handshake or authentication within a second of connecting.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// One metadata request's longest wait; a failed connection ends it early,
/// and the check asks again until [`PROBE_TIMEOUT`].
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long each round serves the client's events (its error callbacks).
const EVENTS_WAIT: Duration = Duration::from_millis(200);

/// Records the client's errors: the metadata request itself only says it
/// timed out, the error callback says why.
#[derive(Debug, Default)]
struct ProbeContext {
    errors: Mutex<Vec<(RDKafkaErrorCode, String)>>,
}

/// Errors kept per probe: the first ones say why.
const MAX_ERRORS: usize = 16;

impl ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        let mut errors = self.errors.lock();
        if errors.len() < MAX_ERRORS {
            errors.push((code, reason.to_owned()));
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        DefaultClientContext.log(level, fac, log_message);
    }
}

impl ConsumerContext for ProbeContext {}

/// Connects with `config`'s security settings and asks for metadata.
/// Skipped in plaintext. Blocking: run it off the runtime.
pub fn check_security(config: &KafkaConfig) -> Result<(), SecurityError> {
    if config.security.protocol == crate::security::SecurityProtocol::Plaintext {
        return Ok(());
    }
    let probe: BaseConsumer<ProbeContext> = config
        .consumer("probe", config.fetch_wait)
        .create_with_context(ProbeContext::default())
        .map_err(|error| SecurityError::new(setting::PROTOCOL, error.to_string()))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let answered = probe.fetch_metadata(None, remaining.min(ATTEMPT_TIMEOUT));
        // The error callback runs when the client's events are served:
        // serve them before looking (no subscription: nothing is consumed).
        let _no_message = probe.poll(EVENTS_WAIT);
        let errors = std::mem::take(&mut *probe.context().errors.lock());
        if let Some(error) = classify(&errors) {
            return Err(error);
        }
        match answered {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() >= deadline => {
                warn!(error = %error, "the brokers did not answer the start-up check of the TLS/SASL settings; waiting for them");
                return Ok(());
            }
            Err(_) => {}
        }
    }
}

/// The first error that is the settings' fault, named.
fn classify(errors: &[(RDKafkaErrorCode, String)]) -> Option<SecurityError> {
    for (code, reason) in errors {
        let lower = reason.to_ascii_lowercase();
        if *code == RDKafkaErrorCode::Authentication || lower.contains("sasl authentication") {
            return Some(SecurityError::new(
                setting::PASSWORD,
                format!(
                    "the broker refused the SASL credentials (check the username, password and mechanism): {reason}"
                ),
            ));
        }
        if lower.contains("certificate verify failed") || lower.contains("unknown ca") {
            return Some(SecurityError::new(
                setting::CA,
                format!("the broker's certificate is not trusted: {reason}"),
            ));
        }
        // The broker's alert when it requires a client certificate and got
        // none, or one it does not trust (TLS 1.3 reports it on the first
        // read after the handshake).
        if lower.contains("alert bad certificate") || lower.contains("certificate required") {
            return Some(SecurityError::new(
                setting::CERTIFICATE,
                format!("the broker refused the client certificate (or its absence): {reason}"),
            ));
        }
        if *code == RDKafkaErrorCode::SSL || lower.contains("ssl handshake failed") {
            return Some(SecurityError::new(
                setting::PROTOCOL,
                format!("the TLS handshake with the broker failed: {reason}"),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_setting_to_fix() {
        let refused = [(
            RDKafkaErrorCode::Authentication,
            "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256".to_owned(),
        )];
        assert_eq!(
            classify(&refused).map(|error| error.setting),
            Some(setting::PASSWORD)
        );
        let untrusted = [(
            RDKafkaErrorCode::SSL,
            "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed".to_owned(),
        )];
        assert_eq!(
            classify(&untrusted).map(|error| error.setting),
            Some(setting::CA)
        );
        let no_client_certificate = [(
            RDKafkaErrorCode::BrokerTransportFailure,
            "ssl://127.0.0.1:9093/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42".to_owned(),
        )];
        assert_eq!(
            classify(&no_client_certificate).map(|error| error.setting),
            Some(setting::CERTIFICATE)
        );
        let transient = [(
            RDKafkaErrorCode::BrokerTransportFailure,
            "Connection refused".to_owned(),
        )];
        assert!(classify(&transient).is_none());
    }
}
