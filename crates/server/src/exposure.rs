//! What a browser may do with the server: the `Host` check against DNS rebinding, and
//! CORS, off unless `--cors ORIGIN`.
//!
//! DNS rebinding: a web page on `evil.example` points its own name at 127.0.0.1, and the
//! victim's browser then sends the page's requests to the local server as same-origin.
//! The `Host` header still says `evil.example`, so only names the server is known by are
//! accepted: `localhost`, IP literals (the bound address; any address when bound to all
//! of them), and those given with `--allow-host`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The names and origins the server answers.
#[derive(Clone, Debug, Default)]
pub struct Exposure {
    /// The address the server is bound to.
    pub bound: Option<SocketAddr>,
    /// Extra host names (`--allow-host`), lower case.
    pub allow_hosts: Vec<String>,
    /// The origin browsers may call from (`--cors`), `*` for any.
    pub cors: Option<String>,
}

impl Exposure {
    /// Whether a request whose `Host` header is `host` may be answered.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if self.allow_hosts.contains(&name) {
            return true;
        }
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<IpAddr>() {
            Ok(ip) => match self.bound {
                Some(b) if b.ip().is_unspecified() => true,
                Some(b) => ip == b.ip() || ip.is_loopback() && b.ip().is_loopback(),
                None => ip.is_loopback(),
            },
            Err(_) => false,
        }
    }
}

/// `host:port`, `[v6]:port` or a bare name, without the port.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        // One colon: a port. More: a bare IPv6 literal.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Refuses a request for a host name the server is not known by (403).
pub async fn check_host(
    State(exposure): State<Arc<Exposure>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(host) = req.headers().get(header::HOST) {
        let allowed = host.to_str().is_ok_and(|h| exposure.host_allowed(h));
        if !allowed {
            return ApiError::with_status(
                StatusCode::FORBIDDEN,
                format!(
                    "this server does not answer to the host {:?} (start it with --allow-host NAME to allow it)",
                    String::from_utf8_lossy(host.as_bytes())
                ),
                Some("host_not_allowed"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// CORS for `--cors ORIGIN`: the allowed origin gets `Access-Control-Allow-Origin`, and
/// its preflight requests an answer; without `--cors`, nothing (browsers then refuse
/// cross-origin reads).
pub async fn cors(State(exposure): State<Arc<Exposure>>, req: Request, next: Next) -> Response {
    let Some(allowed) = &exposure.cors else {
        return next.run(req).await;
    };
    let origin = req.headers().get(header::ORIGIN).cloned();
    let matches = origin
        .as_ref()
        .is_some_and(|o| allowed == "*" || o.as_bytes() == allowed.as_bytes());
    if !matches {
        return next.run(req).await;
    }
    let origin = origin.expect("checked above");
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let loopback = Exposure {
            bound: Some("127.0.0.1:8080".parse().unwrap()),
            allow_hosts: vec!["hearth.lan".into()],
            cors: None,
        };
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "HEARTH.lan:8080",
            "a.localhost",
        ] {
            assert!(loopback.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.5:8080",
            "localhost.evil.example",
            "",
        ] {
            assert!(!loopback.host_allowed(bad), "{bad}");
        }
        let all = Exposure {
            bound: Some("0.0.0.0:8080".parse().unwrap()),
            ..Exposure::default()
        };
        assert!(all.host_allowed("192.168.1.7:8080"));
        assert!(!all.host_allowed("evil.example"));
    }
}
