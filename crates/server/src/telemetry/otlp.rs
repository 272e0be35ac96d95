//! Traces over OTLP, configured by the standard `OTEL_*` variables.

use std::fmt;

use anyhow::{Context as _, bail};
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;

/// The service name when neither `OTEL_SERVICE_NAME` nor a `service.name`
/// in `OTEL_RESOURCE_ATTRIBUTES` says otherwise.
const SERVICE_NAME: &str = "weft";

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl fmt::Display for Protocol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        })
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

pub(super) fn otlp_endpoint() -> Option<String> {
    env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The configured protocol, or an error naming the variable.
pub(super) fn otlp_protocol() -> anyhow::Result<Protocol> {
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = env(name) {
            return match value.trim() {
                "grpc" => Ok(Protocol::Grpc),
                "http/protobuf" => Ok(Protocol::HttpProtobuf),
                other => {
                    bail!("{name}={other:?} is not supported: use \"grpc\" or \"http/protobuf\"")
                }
            };
        }
    }
    Ok(Protocol::HttpProtobuf)
}

/// The variables naming a PEM CA bundle that signs the collector's
/// certificate (the OpenTelemetry specification's names), most specific
/// first.
const CERTIFICATE_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];

/// A CA bundle read from the first certificate variable that is set.
struct OtlpCa {
    variable: &'static str,
    pem: Vec<u8>,
}

fn otlp_ca() -> anyhow::Result<Option<OtlpCa>> {
    for variable in CERTIFICATE_VARIABLES {
        if let Some(path) = env(variable) {
            let pem = std::fs::read(&path).with_context(|| format!("{variable}: read {path}"))?;
            return Ok(Some(OtlpCa { variable, pem }));
        }
    }
    Ok(None)
}

/// gRPC: tonic with rustls (ring); the system's roots, or the given CA.
fn exporter_grpc(
    ca: Option<&OtlpCa>,
) -> Result<SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithTonicConfig as _;
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};

    let builder = SpanExporter::builder().with_tonic();
    match ca {
        Some(ca) => builder
            .with_tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem)))
            .build(),
        None => builder.build(),
    }
}

/// HTTP/protobuf: reqwest with rustls (ring); the system's roots, or the
/// given CA.
fn exporter_http(
    ca: Option<&OtlpCa>,
) -> anyhow::Result<Result<SpanExporter, opentelemetry_otlp::ExporterBuildError>> {
    use opentelemetry_otlp::WithHttpConfig as _;

    // reqwest is built without a crypto provider of its own: rustls's
    // process default is ring, the workspace's one provider.
    let _already = rustls::crypto::ring::default_provider().install_default();
    let builder = SpanExporter::builder().with_http();
    let Some(ca) = ca else {
        return Ok(builder.build());
    };
    let variable = ca.variable;
    let mut client = reqwest::Client::builder();
    for certificate in reqwest::Certificate::from_pem_bundle(&ca.pem)
        .with_context(|| format!("{variable}: not a PEM certificate bundle"))?
    {
        client = client.add_root_certificate(certificate);
    }
    let client = client
        .build()
        .with_context(|| format!("{variable}: build the OTLP HTTP client"))?;
    Ok(builder.with_http_client(client).build())
}

/// Checks the sampler variables the SDK would otherwise only warn about.
fn check_sampler() -> anyhow::Result<()> {
    let Some(sampler) = env("OTEL_TRACES_SAMPLER") else {
        return Ok(());
    };
    let sampler = sampler.trim();
    match sampler {
        "always_on" | "always_off" | "parentbased_always_on" | "parentbased_always_off" => Ok(()),
        "traceidratio" | "parentbased_traceidratio" => {
            let Some(arg) = env("OTEL_TRACES_SAMPLER_ARG") else {
                return Ok(()); // the SDK samples everything, per the spec
            };
            match arg.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(()),
                _ => bail!(
                    "OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio between 0 and 1 (for OTEL_TRACES_SAMPLER={sampler})"
                ),
            }
        }
        other => bail!(
            "OTEL_TRACES_SAMPLER={other:?} is not supported: use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
        ),
    }
}

/// The tracer provider when traces are configured, else `None`.
pub(super) fn tracer_provider(instance: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    if env("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if let Some(exporter) = env("OTEL_TRACES_EXPORTER") {
        match exporter.trim() {
            "none" => return Ok(None),
            "otlp" => {}
            other => {
                bail!("OTEL_TRACES_EXPORTER={other:?} is not supported: use \"otlp\" or \"none\"")
            }
        }
    }
    let Some(endpoint) = otlp_endpoint() else {
        return Ok(None);
    };
    let protocol = otlp_protocol()?;
    check_sampler()?;
    let ca = otlp_ca()?;
    let exporter = match protocol {
        Protocol::Grpc => exporter_grpc(ca.as_ref()),
        Protocol::HttpProtobuf => exporter_http(ca.as_ref())?,
    }
    .with_context(|| {
        format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?}: build the OTLP exporter")
    })?;

    let mut resource = Resource::builder();
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| attrs.contains("service.name="));
    if !named {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let resource = resource
        .with_attributes([
            KeyValue::new("service.instance.id", instance.to_owned()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let processor = BatchSpanProcessor::builder(exporter, Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    Ok(Some(provider))
}
