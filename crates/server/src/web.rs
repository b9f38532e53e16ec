//! The chat page at `/`: one HTML file, its script, its style sheet and its icon, all
//! compiled into the binary (`include_str!`), so the page works offline and with no file
//! beside the executable.
//!
//! The page holds no secret, so it needs no API key; the key a user types stays in their
//! browser's `localStorage` and goes with each API call. The `Host` check against DNS
//! rebinding ([`crate::exposure::check_host`]) is a layer over the whole router, so it
//! applies here as everywhere.
//!
//! Every answer carries a Content-Security-Policy that allows only this server's own
//! script, style and API, no inline script or style, and Trusted Types with no policy: a
//! string can never reach `innerHTML` or any other HTML sink, so the model's output (which
//! is untrusted) is only ever put into the page as text nodes (see `web/app.js`).
//!
//! Caching: the files change only with the binary, so each has a strong `ETag` (a hash of
//! its bytes, computed at compile time) and `Cache-Control: no-cache`: a browser keeps its
//! copy and revalidates it on each load (a 304 with no body), and never runs a stale
//! script after an upgrade.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    content_type: &'static str,
    body: &'static str,
    /// `"` + 16 hex digits of the body's FNV-1a hash + `"`.
    etag: [u8; 18],
}

impl Asset {
    const fn new(content_type: &'static str, body: &'static str) -> Asset {
        Asset {
            content_type,
            body,
            etag: etag_of(body),
        }
    }

    fn etag(&self) -> &str {
        // ASCII by construction (quotes and hex digits).
        std::str::from_utf8(&self.etag).unwrap_or_default()
    }
}

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");
const ICON_SVG: &str = include_str!("../web/icon.svg");

const INDEX: Asset = Asset::new("text/html; charset=utf-8", INDEX_HTML);
const SCRIPT: Asset = Asset::new("text/javascript; charset=utf-8", APP_JS);
const STYLE: Asset = Asset::new("text/css; charset=utf-8", APP_CSS);
const ICON: Asset = Asset::new("image/svg+xml", ICON_SVG);

/// The policy every page answer carries. `connect-src 'self'` keeps the script's `fetch`
/// to this server; `require-trusted-types-for` makes any HTML sink refuse a plain string.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// The page's routes (`GET` and `HEAD`), to merge into the API's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { serve(&INDEX, &h) }))
        .route(
            "/app.js",
            get(|h: HeaderMap| async move { serve(&SCRIPT, &h) }),
        )
        .route(
            "/app.css",
            get(|h: HeaderMap| async move { serve(&STYLE, &h) }),
        )
        .route(
            "/icon.svg",
            get(|h: HeaderMap| async move { serve(&ICON, &h) }),
        )
}

/// The page's address for a server bound to `bound`: loopback when it is bound to every
/// address (the one a person on this machine can open).
pub fn page_url(bound: std::net::SocketAddr) -> String {
    let ip = match bound.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}/", std::net::SocketAddr::new(ip, bound.port()))
}

/// What `hearth serve` prints once the model is ready: the page's address and a request a
/// user can paste into a shell (with the key from `HEARTH_API_KEY` when one is needed).
pub fn ready_text(bound: std::net::SocketAddr, model: &str, needs_key: bool) -> String {
    let url = page_url(bound);
    let auth = if needs_key {
        " -H \"Authorization: Bearer $HEARTH_API_KEY\""
    } else {
        ""
    };
    // The model id is a file stem: quote it for JSON, and keep a `'` from ending the shell
    // quote around the body.
    let model_json = serde_json::Value::from(model)
        .to_string()
        .replace('\'', "\\u0027");
    format!(
        "hearth: chat in your browser at {url}\n\
         hearth: or point any OpenAI client at {url}v1, e.g.\n  \
         curl {url}v1/chat/completions{auth} -H 'Content-Type: application/json' \\\n    \
         -d '{{\"model\": {model_json}, \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}], \"max_tokens\": 100}}'"
    )
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == asset.etag() || t.trim() == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(asset.etag()) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `"` + the 64-bit FNV-1a hash of `body` in hex + `"`, at compile time. Not a secure
/// hash: it only has to change when a file does.
const fn etag_of(body: &str) -> [u8; 18] {
    let bytes = body.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    let mut tag = [b'"'; 18];
    let mut d = 0;
    while d < 16 {
        let nibble = (hash >> (60 - 4 * d)) & 0xf;
        tag[1 + d] = b"0123456789abcdef"[nibble as usize];
        d += 1;
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_per_file_and_are_quoted() {
        let tags = [INDEX.etag(), SCRIPT.etag(), STYLE.etag(), ICON.etag()];
        for (i, t) in tags.iter().enumerate() {
            assert!(
                t.starts_with('"') && t.ends_with('"') && t.len() == 18,
                "{t}"
            );
            assert!(!tags[..i].contains(t), "{t}");
        }
    }

    #[test]
    fn page_url_opens_locally() {
        assert_eq!(
            page_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(page_url("[::]:80".parse().unwrap()), "http://[::1]:80/");
        assert_eq!(
            page_url("127.0.0.1:9".parse().unwrap()),
            "http://127.0.0.1:9/"
        );
    }

    #[test]
    fn ready_text_quotes_the_model_for_json_and_the_shell() {
        let t = ready_text("127.0.0.1:8080".parse().unwrap(), "it's \"x\"", true);
        assert!(t.contains("http://127.0.0.1:8080/\n"), "{t}");
        assert!(t.contains(r#""model": "it\u0027s \"x\"""#), "{t}");
        assert!(t.contains("Bearer $HEARTH_API_KEY"), "{t}");
        let t = ready_text("127.0.0.1:8080".parse().unwrap(), "m", false);
        assert!(!t.contains("Authorization"), "{t}");
    }

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        use tower::ServiceExt;
        let mut req = axum::http::Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn each_file_has_its_type_and_the_security_headers() {
        for (path, asset) in [
            ("/", &INDEX),
            ("/app.js", &SCRIPT),
            ("/app.css", &STYLE),
            ("/icon.svg", &ICON),
        ] {
            let r = get(path, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], asset.content_type, "{path}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert_eq!(h[header::ETAG], asset.etag());
        }
    }

    #[tokio::test]
    async fn a_current_etag_gets_304_and_a_stale_one_the_file() {
        let r = get("/app.js", Some(&format!("\"stale\", {}", SCRIPT.etag()))).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert!(body.is_empty());
        let r = get("/app.js", Some("\"stale\"")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(body, APP_JS.as_bytes());
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        // The CSP forbids inline script and style: the page must not need them.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("style="));
        assert!(!INDEX_HTML.contains("<style"));
        for needed in ["/app.js", "/app.css", "/icon.svg"] {
            assert!(INDEX_HTML.contains(needed), "{needed}");
        }
        // No other origin in the page or its style (the script names http and https
        // only to check links' schemes).
        for text in [INDEX_HTML, APP_CSS] {
            assert!(!text.contains("://"), "a link to another origin");
        }
    }
}
