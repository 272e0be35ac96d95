//! How a client reaches a broker that wants TLS, SASL or both: the
//! `security.protocol`, `sasl.*` and `ssl.*` properties of librdkafka.
//!
//! librdkafka is built with OpenSSL (the `ssl` feature), which also brings
//! SASL SCRAM-SHA-256/512 and PLAIN: librdkafka implements those itself.
//! The password lives in a [`Secret`], whose `Debug` never shows it.

use std::fmt;
use std::path::PathBuf;

use rdkafka::ClientConfig;

/// `--kafka-security-protocol`: librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// No TLS, no SASL.
    #[default]
    Plaintext,
    /// TLS, no SASL (a client certificate may authenticate the client).
    Ssl,
    /// SASL over TLS.
    SaslSsl,
    /// SASL without TLS (PLAIN sends the password in the clear: only on a
    /// network that is already private).
    SaslPlaintext,
}

impl SecurityProtocol {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslSsl => "sasl_ssl",
            Self::SaslPlaintext => "sasl_plaintext",
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn is_sasl(self) -> bool {
        matches!(self, Self::SaslSsl | Self::SaslPlaintext)
    }
}

/// `--kafka-sasl-mechanism`: librdkafka's `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// SCRAM with SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM with SHA-512.
    ScramSha512,
    /// The password itself (RFC 4616): use it over TLS only.
    Plain,
}

impl SaslMechanism {
    /// librdkafka's (and Kafka's) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::Plain => "PLAIN",
        }
    }
}

/// A value never written to a log: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("***")
    }
}

/// SASL credentials.
#[derive(Debug, Clone)]
pub struct SaslCredentials {
    /// `--kafka-sasl-mechanism`.
    pub mechanism: SaslMechanism,
    /// `--kafka-sasl-username`.
    pub username: String,
    /// `--kafka-sasl-password` (or its file).
    pub password: Secret,
}

/// TLS and SASL towards the brokers (`--kafka-security-protocol` and the
/// flags after it). The default is plaintext, as before these flags.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    /// `security.protocol`.
    pub protocol: SecurityProtocol,
    /// Required by the `sasl_*` protocols, refused by the others.
    pub sasl: Option<SaslCredentials>,
    /// `ssl.ca.location`: the CA bundle the brokers' certificates are
    /// checked against. `None`: the system's trust store.
    pub ssl_ca: Option<PathBuf>,
    /// `ssl.certificate.location`: a client certificate (mutual TLS).
    pub ssl_certificate: Option<PathBuf>,
    /// `ssl.key.location`: the client certificate's private key.
    pub ssl_key: Option<PathBuf>,
}

/// A security setting that cannot work, or that the brokers refused.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SecurityError {
    /// The flag (and its environment twin) to look at.
    pub setting: &'static str,
    /// Why.
    pub reason: String,
}

impl SecurityError {
    pub(crate) fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

/// The flag names, as errors print them.
pub(crate) mod setting {
    pub(crate) const PROTOCOL: &str = "--kafka-security-protocol / WEFT_KAFKA_SECURITY_PROTOCOL";
    pub(crate) const MECHANISM: &str = "--kafka-sasl-mechanism / WEFT_KAFKA_SASL_MECHANISM";
    pub(crate) const USERNAME: &str = "--kafka-sasl-username / WEFT_KAFKA_SASL_USERNAME";
    pub(crate) const PASSWORD: &str =
        "--kafka-sasl-password / WEFT_KAFKA_SASL_PASSWORD / --kafka-sasl-password-file";
    pub(crate) const CA: &str = "--kafka-ssl-ca / WEFT_KAFKA_SSL_CA";
    pub(crate) const CERTIFICATE: &str = "--kafka-ssl-certificate / WEFT_KAFKA_SSL_CERTIFICATE";
    pub(crate) const KEY: &str = "--kafka-ssl-key / WEFT_KAFKA_SSL_KEY";
}

impl KafkaSecurity {
    /// Checks that the settings fit together and the files can be read.
    pub fn validate(&self) -> Result<(), SecurityError> {
        match (&self.sasl, self.protocol.is_sasl()) {
            (None, true) => {
                return Err(SecurityError::new(
                    setting::MECHANISM,
                    format!(
                        "{} needs a SASL mechanism, username and password",
                        self.protocol.as_str()
                    ),
                ));
            }
            (Some(_), false) => {
                return Err(SecurityError::new(
                    setting::PROTOCOL,
                    format!(
                        "SASL credentials are set but {} does not use SASL: use sasl_ssl",
                        self.protocol.as_str()
                    ),
                ));
            }
            (Some(sasl), true) => {
                if sasl.username.is_empty() {
                    return Err(SecurityError::new(setting::USERNAME, "is empty"));
                }
                if sasl.password.expose().is_empty() {
                    return Err(SecurityError::new(setting::PASSWORD, "is empty"));
                }
            }
            (None, false) => {}
        }
        let files = [
            (setting::CA, &self.ssl_ca),
            (setting::CERTIFICATE, &self.ssl_certificate),
            (setting::KEY, &self.ssl_key),
        ];
        for (name, path) in files {
            let Some(path) = path else { continue };
            if !self.protocol.is_tls() {
                return Err(SecurityError::new(
                    name,
                    format!(
                        "is set but {} is not TLS: use ssl or sasl_ssl",
                        self.protocol.as_str()
                    ),
                ));
            }
            if let Err(error) = std::fs::metadata(path) {
                return Err(SecurityError::new(
                    name,
                    format!("read {}: {error}", path.display()),
                ));
            }
        }
        if self.ssl_certificate.is_some() != self.ssl_key.is_some() {
            return Err(SecurityError::new(
                setting::KEY,
                "a client certificate needs its key, and a key its certificate",
            ));
        }
        Ok(())
    }

    /// Sets the librdkafka properties.
    pub(crate) fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol.as_str());
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        if !self.protocol.is_tls() {
            return;
        }
        // Check the broker's name against its certificate (librdkafka's
        // default since 2.0; set so an older default cannot weaken it).
        config.set("ssl.endpoint.identification.algorithm", "https");
        if let Some(path) = &self.ssl_ca {
            config.set("ssl.ca.location", path.to_string_lossy());
        }
        if let Some(path) = &self.ssl_certificate {
            config.set("ssl.certificate.location", path.to_string_lossy());
        }
        if let Some(path) = &self.ssl_key {
            config.set("ssl.key.location", path.to_string_lossy());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl_ssl() -> KafkaSecurity {
        KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl: Some(SaslCredentials {
                mechanism: SaslMechanism::ScramSha512,
                username: "weft".to_owned(),
                password: Secret::new("s3cret".to_owned()),
            }),
            ..KafkaSecurity::default()
        }
    }

    #[test]
    fn sasl_ssl_sets_the_librdkafka_properties() {
        let mut config = ClientConfig::new();
        sasl_ssl().apply(&mut config);
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("weft"));
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert_eq!(
            config.get("ssl.endpoint.identification.algorithm"),
            Some("https")
        );
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let printed = format!("{:?}", sasl_ssl());
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("***"), "{printed}");
    }

    #[test]
    fn mismatched_settings_name_the_flag() {
        let missing = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            ..KafkaSecurity::default()
        };
        let error = missing.validate().err().map(|error| error.setting);
        assert_eq!(error, Some(setting::MECHANISM));

        let mut plaintext_with_sasl = sasl_ssl();
        plaintext_with_sasl.protocol = SecurityProtocol::Plaintext;
        let error = plaintext_with_sasl
            .validate()
            .err()
            .map(|error| error.setting);
        assert_eq!(error, Some(setting::PROTOCOL));

        let mut no_password = sasl_ssl();
        if let Some(sasl) = &mut no_password.sasl {
            sasl.password = Secret::new(String::new());
        }
        let error = no_password.validate().err().map(|error| error.setting);
        assert_eq!(error, Some(setting::PASSWORD));

        let mut missing_ca = sasl_ssl();
        missing_ca.ssl_ca = Some(PathBuf::from("/nonexistent/weft-ca.pem"));
        let error = missing_ca.validate().err().map(|error| error.setting);
        assert_eq!(error, Some(setting::CA));

        assert!(sasl_ssl().validate().is_ok());
        assert!(KafkaSecurity::default().validate().is_ok());
    }
}
