//! The Kafka TLS and SASL flags, shared by `weft serve` and `weft persist`
//! (they are part of `KafkaArgs`), and their translation into
//! [`weft_kafka::KafkaSecurity`].
//!
//! The password comes from `--kafka-sasl-password`, its environment twin
//! `WEFT_KAFKA_SASL_PASSWORD`, or `--kafka-sasl-password-file` (a mounted
//! Secret); it is never printed: `--help` hides the variable's value and the
//! settings' `Debug` shows `***`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use weft_kafka::{KafkaSecurity, SaslCredentials, SaslMechanism, Secret, SecurityProtocol};

/// TLS and SASL towards the brokers.
#[derive(Debug, Args)]
pub struct KafkaSecurityArgs {
    /// How clients talk to the brokers: `plaintext`, `ssl` (TLS),
    /// `sasl_ssl` (SASL over TLS) or `sasl_plaintext`.
    #[arg(long, env = "WEFT_KAFKA_SECURITY_PROTOCOL", value_enum, default_value_t = ProtocolArg::Plaintext)]
    pub kafka_security_protocol: ProtocolArg,

    /// SASL mechanism (with `sasl_ssl` or `sasl_plaintext`).
    #[arg(long, env = "WEFT_KAFKA_SASL_MECHANISM", value_enum)]
    pub kafka_sasl_mechanism: Option<MechanismArg>,

    /// SASL username.
    #[arg(long, env = "WEFT_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,

    /// SASL password. Prefer `--kafka-sasl-password-file` or the variable:
    /// a command line is visible to every user of the host.
    #[arg(
        long,
        env = "WEFT_KAFKA_SASL_PASSWORD",
        hide_env_values = true,
        conflicts_with = "kafka_sasl_password_file"
    )]
    pub kafka_sasl_password: Option<String>,

    /// A file holding the SASL password (one trailing newline is ignored).
    #[arg(long, env = "WEFT_KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,

    /// PEM CA bundle the brokers' certificates are checked against (with
    /// `ssl` or `sasl_ssl`). Unset: the system's trust store.
    #[arg(long, env = "WEFT_KAFKA_SSL_CA")]
    pub kafka_ssl_ca: Option<PathBuf>,

    /// PEM client certificate, for brokers that authenticate clients by
    /// certificate (mutual TLS). Needs `--kafka-ssl-key`.
    #[arg(long, env = "WEFT_KAFKA_SSL_CERTIFICATE", requires = "kafka_ssl_key")]
    pub kafka_ssl_certificate: Option<PathBuf>,

    /// PEM private key of `--kafka-ssl-certificate`.
    #[arg(long, env = "WEFT_KAFKA_SSL_KEY", requires = "kafka_ssl_certificate")]
    pub kafka_ssl_key: Option<PathBuf>,
}

/// `--kafka-security-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// No TLS, no SASL.
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL over TLS.
    #[value(name = "sasl_ssl")]
    SaslSsl,
    /// SASL without TLS.
    #[value(name = "sasl_plaintext")]
    SaslPlaintext,
}

/// `--kafka-sasl-mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MechanismArg {
    /// SCRAM-SHA-256.
    #[value(name = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[value(name = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
    /// PLAIN (over TLS only).
    #[value(name = "PLAIN", alias = "plain")]
    Plain,
}

/// The validated security settings.
pub fn kafka_security(args: &KafkaSecurityArgs) -> anyhow::Result<KafkaSecurity> {
    let protocol = match args.kafka_security_protocol {
        ProtocolArg::Plaintext => SecurityProtocol::Plaintext,
        ProtocolArg::Ssl => SecurityProtocol::Ssl,
        ProtocolArg::SaslSsl => SecurityProtocol::SaslSsl,
        ProtocolArg::SaslPlaintext => SecurityProtocol::SaslPlaintext,
    };
    let password = match (&args.kafka_sasl_password, &args.kafka_sasl_password_file) {
        (Some(password), _) => Some(password.clone()),
        (None, Some(path)) => Some(read_password(path)?),
        (None, None) => None,
    };
    let any_sasl = args.kafka_sasl_mechanism.is_some()
        || args.kafka_sasl_username.is_some()
        || password.is_some();
    let sasl = if any_sasl {
        let Some(mechanism) = args.kafka_sasl_mechanism else {
            bail!(
                "--kafka-sasl-mechanism / WEFT_KAFKA_SASL_MECHANISM is required with SASL credentials"
            );
        };
        let Some(username) = &args.kafka_sasl_username else {
            bail!("--kafka-sasl-username / WEFT_KAFKA_SASL_USERNAME is required with SASL");
        };
        let Some(password) = password else {
            bail!(
                "--kafka-sasl-password / WEFT_KAFKA_SASL_PASSWORD (or --kafka-sasl-password-file) is required with SASL"
            );
        };
        Some(SaslCredentials {
            mechanism: match mechanism {
                MechanismArg::ScramSha256 => SaslMechanism::ScramSha256,
                MechanismArg::ScramSha512 => SaslMechanism::ScramSha512,
                MechanismArg::Plain => SaslMechanism::Plain,
            },
            username: username.clone(),
            password: Secret::new(password),
        })
    } else {
        None
    };
    let security = KafkaSecurity {
        protocol,
        sasl,
        ssl_ca: args.kafka_ssl_ca.clone(),
        ssl_certificate: args.kafka_ssl_certificate.clone(),
        ssl_key: args.kafka_ssl_key.clone(),
    };
    security.validate()?;
    Ok(security)
}

fn read_password(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "--kafka-sasl-password-file / WEFT_KAFKA_SASL_PASSWORD_FILE: read {}",
            path.display()
        )
    })?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(password.to_owned())
}
