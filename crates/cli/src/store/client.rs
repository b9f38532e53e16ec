//! The HTTP client of `hearth pull`: blocking (`ureq`, rustls), redirects followed by
//! hand.
//!
//! By hand because the hub's answer to `/ORG/REPO/resolve/REV/FILE` is a redirect to a
//! CDN whose own answer says nothing about the file: the sha256 (`X-Linked-Etag`) and
//! size (`X-Linked-Size`) ride on the redirect, and ureq's own redirect handling would
//! drop them. Following each hop here also lets the client send `HF_TOKEN` to the hub's
//! origin and nowhere else, and refuse a hop to plain `http://` on another machine.

use std::time::Duration;

use anyhow::{anyhow, bail};
use ureq::http::{Response, StatusCode};
use ureq::Body;

use super::url::Url;

/// At most this many redirects per request (the hub needs one).
const MAX_REDIRECTS: usize = 10;

/// What the hub says about a file on the way to it (from the redirect's headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Linked {
    /// Lower-case hex SHA-256 of the file (`X-Linked-Etag`, when it is one).
    pub sha256: Option<String>,
    /// `X-Linked-Size`.
    pub size: Option<u64>,
}

/// A response at the end of the redirects, with what the hops said about the file.
pub(crate) struct Fetched {
    pub response: Response<Body>,
    pub linked: Linked,
    /// The URL that answered.
    pub url: Url,
}

/// A failed request, and whether trying again might help (a cut connection, a timeout,
/// a 5xx or 429) or not (a 404, a refused redirect).
#[derive(Debug)]
pub(crate) struct FetchError {
    pub error: anyhow::Error,
    pub transient: bool,
}

impl FetchError {
    pub fn fatal(error: anyhow::Error) -> FetchError {
        FetchError {
            error,
            transient: false,
        }
    }

    pub fn transient(error: anyhow::Error) -> FetchError {
        FetchError {
            error,
            transient: true,
        }
    }
}

/// The client: one connection pool, the hub's origin, and the token for it.
pub(crate) struct Client {
    agent: ureq::Agent,
    hub: Url,
    token: Option<String>,
}

impl Client {
    /// A client for the hub at `hub`; `token` (from `HF_TOKEN`) is sent to that origin
    /// only.
    pub fn new(hub: Url, token: Option<String>) -> Client {
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(format!("hearth/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A body that stops moving for this long is a cut connection, to be resumed.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Client { agent, hub, token }
    }

    /// The hub's base URL.
    pub fn hub(&self) -> &Url {
        &self.hub
    }

    /// GETs `url` (from byte `range_from` on, when given), following redirects.
    pub fn get(&self, url: &Url, range_from: Option<u64>) -> Result<Fetched, FetchError> {
        self.request("GET", url, range_from)
    }

    /// HEADs `url`, following redirects.
    pub fn head(&self, url: &Url) -> Result<Fetched, FetchError> {
        self.request("HEAD", url, None)
    }

    fn request(
        &self,
        method: &str,
        url: &Url,
        range_from: Option<u64>,
    ) -> Result<Fetched, FetchError> {
        let mut url = url.clone();
        let mut linked = Linked::default();
        for _ in 0..=MAX_REDIRECTS {
            url.check_fetchable().map_err(FetchError::fatal)?;
            let target = url.to_string();
            let mut request = match method {
                "HEAD" => self.agent.head(&target),
                _ => self.agent.get(&target),
            };
            if let Some(from) = range_from {
                request = request.header("Range", format!("bytes={from}-"));
            }
            if let Some(token) = &self.token {
                if url.origin() == self.hub.origin() {
                    request = request.header("Authorization", format!("Bearer {token}"));
                }
            }
            let response = request.call().map_err(|e| call_error(&url, e))?;
            linked.take_from(&response);
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                return Ok(Fetched {
                    response,
                    linked,
                    url,
                });
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    FetchError::fatal(anyhow!(
                        "{url}: redirect ({}) without a Location",
                        response.status()
                    ))
                })?;
            url = url.join(location).map_err(FetchError::fatal)?;
        }
        Err(FetchError::fatal(anyhow!(
            "{url}: more than {MAX_REDIRECTS} redirects"
        )))
    }
}

impl Linked {
    /// Keeps the first `X-Linked-Etag` that is a SHA-256 and the first `X-Linked-Size`.
    fn take_from(&mut self, response: &Response<Body>) {
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        if self.sha256.is_none() {
            self.sha256 = header("x-linked-etag").and_then(sha256_of_etag);
        }
        if self.size.is_none() {
            self.size = header("x-linked-size").and_then(|s| s.trim().parse().ok());
        }
    }
}

/// The SHA-256 in an ETag (`"abc…"`, maybe weak, `W/"abc…"`), if it is one: the hub's
/// LFS files carry it; other ETags (a git blob's SHA-1, an S3 MD5) are not hashes of
/// the kind checked here and are ignored.
pub(crate) fn sha256_of_etag(etag: &str) -> Option<String> {
    let tag = etag.trim().trim_start_matches("W/").trim_matches('"');
    is_sha256(tag).then(|| tag.to_ascii_lowercase())
}

/// 64 hex digits.
pub(crate) fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A request that got no answer: refused and unresolvable hosts are not retried (the
/// address is wrong, not the moment), everything else is.
fn call_error(url: &Url, error: ureq::Error) -> FetchError {
    let message = anyhow!("{url}: {error}");
    match error {
        ureq::Error::HostNotFound
        | ureq::Error::BadUri(_)
        | ureq::Error::Tls(_)
        | ureq::Error::Rustls(_) => FetchError::fatal(message),
        _ => FetchError::transient(message),
    }
}

/// An error for an HTTP status that is not the one wanted: 5xx and 429 are worth another
/// try, the rest say something about the request (and 401/403 that a token may help).
pub(crate) fn status_error(url: &Url, status: StatusCode, hub: &Url) -> FetchError {
    let code = status.as_u16();
    let hint = match code {
        401 | 403 if url.origin() == hub.origin() => {
            ": the repository may be private or gated; set HF_TOKEN to a token that may read it"
        }
        404 => ": not found",
        _ => "",
    };
    let error = anyhow!("{url}: the server answered {status}{hint}");
    if code == 429 || status.is_server_error() {
        FetchError::transient(error)
    } else {
        FetchError::fatal(error)
    }
}

/// Refuses a body over `limit` bytes (a file list, not a model).
pub(crate) fn read_text(response: Response<Body>, url: &Url, limit: u64) -> anyhow::Result<String> {
    match response
        .into_body()
        .into_with_config()
        .limit(limit)
        .read_to_string()
    {
        Ok(text) => Ok(text),
        Err(ureq::Error::BodyExceedsLimit(_)) => bail!("{url}: answer larger than {limit} bytes"),
        Err(e) => bail!("{url}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        let sha = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
        assert_eq!(sha256_of_etag(&format!("\"{sha}\"")).as_deref(), Some(sha));
        assert_eq!(
            sha256_of_etag(&format!("W/\"{}\"", sha.to_uppercase())).as_deref(),
            Some(sha)
        );
        // A git blob id (SHA-1) is not a SHA-256.
        assert_eq!(
            sha256_of_etag("\"3a9f1e0c1b2d4e5f60718293a4b5c6d7e8f90a1b\""),
            None
        );
        assert_eq!(sha256_of_etag(&format!("\"{}\"", "g".repeat(64))), None);
    }
}
