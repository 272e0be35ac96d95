//! Reading a Weft node's `GET /metrics` (the Prometheus text format).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, ensure};

/// How long a scrape may take to connect or to read.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The text of `GET /metrics` of the node at `addr`.
pub(crate) fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    get(addr, "/metrics")
}

/// The body of `GET path` of the node at `addr`, if it answers 200.
pub(crate) fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)
        .with_context(|| format!("connect {addr} for {path}"))?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("read {path}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {path}"))?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{path} answered {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_owned())
}

/// The value of the unlabelled series `name` in a metrics page (0 if absent).
pub(crate) fn value(page: &str, name: &str) -> f64 {
    page.lines()
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| *series == name)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0.0)
}

/// The mean of histogram `name` over what was observed between two pages
/// (`None` if nothing was).
pub(crate) fn histogram_mean_between(before: &str, after: &str, name: &str) -> Option<f64> {
    let sum = value(after, &format!("{name}_sum")) - value(before, &format!("{name}_sum"));
    let count = value(after, &format!("{name}_count")) - value(before, &format!("{name}_count"));
    (count > 0.0).then(|| sum / count)
}

#[cfg(test)]
mod tests {
    use super::histogram_mean_between;

    #[test]
    fn a_histograms_mean_over_an_interval() {
        let before = "# HELP x\nweft_publish_seconds_sum 1.5\nweft_publish_seconds_count 10\n";
        let after = "weft_publish_seconds_sum 3.5\nweft_publish_seconds_count 20\nother 4\n";
        let mean = histogram_mean_between(before, after, "weft_publish_seconds");
        assert_eq!(mean, Some(0.2));
        assert_eq!(
            histogram_mean_between(after, after, "weft_publish_seconds"),
            None
        );
    }
}
