//! Pushes a run's metrics (the same text as the textfile of
//! [`crate::metrics`]) to a Prometheus Pushgateway: one HTTP PUT to
//! `<url>/metrics/job/layerscope_bench/instance/<host>`, which replaces
//! whatever that group held. Plain HTTP/1.1 over a `TcpStream` (one
//! request, `Connection: close`): no HTTP client dependency for one PUT.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine as _;

use crate::BenchError;

/// The `job` label of every pushed series.
pub const JOB: &str = "layerscope_bench";

/// How long connecting, sending and reading the answer may each take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// This machine's name for the `instance` label (`/proc/sys/kernel/hostname`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A grouping-key path segment `name/value`; values with characters a URL
/// path cannot carry as they are go as `name@base64/<base64url>` (`=` for
/// an empty value), as the Pushgateway API defines.
fn label_segment(name: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if plain {
        format!("{name}/{value}")
    } else if value.is_empty() {
        format!("{name}@base64/=")
    } else {
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(value);
        format!("{name}@base64/{encoded}")
    }
}

/// The request path for the group `job`/`instance` under `base` (a
/// Pushgateway behind a path prefix).
pub fn group_path(base: &str, instance: &str) -> String {
    format!(
        "{}/metrics/{}/{}",
        base.trim_end_matches('/'),
        label_segment("job", JOB),
        label_segment("instance", instance)
    )
}

/// `http://host:port[/prefix]` (or `host:port`) as host, port and prefix.
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "scheme {scheme} is not supported (plain http only)"
            ));
        }
        None => url,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err("no host in the URL".into());
    }
    // `[::1]:9091` or `host:9091`; no port: 80.
    let port_at = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].find(':').map(|i| bracket + i),
        None => authority.rfind(':'),
    };
    let (host, port) = match port_at {
        Some(i) => {
            let port = &authority[i + 1..];
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("bad port {port:?}"))?;
            (&authority[..i], port)
        }
        None => (authority, 80),
    };
    Ok((host.to_string(), port, path.to_string()))
}

/// PUTs `body` (Prometheus text format) as the group of [`JOB`] and
/// `instance` to the Pushgateway at `url`.
pub fn push(url: &str, instance: &str, body: &str) -> Result<(), BenchError> {
    let fail = |why: String| BenchError::Push {
        url: url.to_string(),
        why,
    };
    let (host, port, base) = parse_url(url).map_err(fail)?;
    let path = group_path(&base, instance);
    let addrs: Vec<_> = (host.trim_matches(|c| c == '[' || c == ']'), port)
        .to_socket_addrs()
        .map_err(|e| fail(format!("resolve {host}: {e}")))?
        .collect();
    let mut last_error = format!("{host} resolves to no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = format!("connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or_else(|| fail(last_error))?;
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| fail(format!("{what}: {e}"))
    };
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(io("set timeout"))?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(io("set timeout"))?;
    let request = format!(
        "PUT {path} HTTP/1.1\r\n\
         Host: {host}:{port}\r\n\
         User-Agent: layerscope-bench\r\n\
         Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(io("send"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(io("read the answer"))?;
    let response = String::from_utf8_lossy(&response);
    let status_line = response.lines().next().unwrap_or("");
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| fail(format!("not an HTTP answer: {status_line:?}")))?;
    if (200..300).contains(&code) {
        return Ok(());
    }
    let answer = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| status_line.trim().to_string());
    Err(fail(format!("HTTP {code}: {answer}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_and_without_scheme_and_prefix() {
        assert_eq!(
            parse_url("http://gw:9091").unwrap(),
            ("gw".into(), 9091, "".into())
        );
        assert_eq!(
            parse_url("127.0.0.1:9091/pg/").unwrap(),
            ("127.0.0.1".into(), 9091, "/pg/".into())
        );
        assert_eq!(
            parse_url("http://gw").unwrap(),
            ("gw".into(), 80, "".into())
        );
        assert!(parse_url("https://gw:9091").unwrap_err().contains("https"));
        assert!(parse_url("http://gw:x").unwrap_err().contains("port"));
    }

    #[test]
    fn grouping_keys_encode_unsafe_values() {
        assert_eq!(
            group_path("/pg/", "host-1.example"),
            "/pg/metrics/job/layerscope_bench/instance/host-1.example"
        );
        assert_eq!(
            group_path("", "a/b"),
            "/metrics/job/layerscope_bench/instance@base64/YS9i"
        );
        assert_eq!(
            group_path("", ""),
            "/metrics/job/layerscope_bench/instance@base64/="
        );
    }

    #[test]
    fn a_refused_connection_names_the_url_and_the_cause() {
        // A port nobody listens on: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = push(&url, "h", "x 1\n").unwrap_err().to_string();
        assert!(err.contains(&url) && err.contains("connect"), "{err}");
        assert!(!err.contains('\n'));
    }
}
