//! A raw HTTP/1.1 client, for the service routes and refused upgrades:
//! every byte of a refusal (status, headers, body) can be checked.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wait::{WAIT, bounded};

/// A response read off a raw HTTP/1.1 connection.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Checks the refusal shape `{"error":{"code":N,"message":"...","details":"..."}}`
    /// with `code` equal to the status.
    pub(crate) fn assert_json_error(&self, status: u16) {
        assert_eq!(
            self.status,
            status,
            "status; body {:?}",
            String::from_utf8_lossy(&self.body)
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "content-type {content_type:?}"
        );
        let body = self.json();
        let error = body
            .get("error")
            .unwrap_or_else(|| panic!("no \"error\" object in {body}"));
        assert_eq!(
            error.get("code").and_then(serde_json::Value::as_u64),
            Some(u64::from(status)),
            "{body}"
        );
        for field in ["message", "details"] {
            let value = error.get(field).and_then(serde_json::Value::as_str);
            assert!(
                value.is_some_and(|value| !value.is_empty()),
                "error.{field} must be a non-empty string: {body}"
            );
        }
    }
}

/// Sends `method path` with `headers` and reads the response: the head, then
/// `Content-Length` bytes of body (or up to the end of the connection).
pub(crate) async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    bounded(WAIT, "an HTTP response", async {
        let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut received = Vec::new();
        let mut chunk = [0_u8; 4096];
        loop {
            if let Some(response) = parse_response(&received, method == "HEAD") {
                return response;
            }
            let read = stream.read(&mut chunk).await.expect("read response");
            if read == 0 {
                return parse_response(&received, true)
                    .expect("the connection closed before a full response head");
            }
            received.extend_from_slice(&chunk[..read]);
        }
    })
    .await
}

/// Parses `received` once it holds a whole response; with `complete`, what
/// follows the head is the whole body whatever its length.
fn parse_response(received: &[u8], complete: bool) -> Option<HttpResponse> {
    let head_end = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&received[..head_end]).expect("response head is not UTF-8");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let body = &received[head_end + 4..];
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.parse::<usize>().expect("content-length"));
    let body = match length {
        Some(length) if body.len() >= length => body[..length].to_vec(),
        _ if complete => body.to_vec(),
        _ => return None,
    };
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}
