//! The URLs `hearth pull` fetches: parsed just enough to connect, to follow a redirect and
//! to decide what the request may carry.
//!
//! Only `https://`, and plain `http://` to a loopback host (a local mirror or a test
//! hub), are fetched: a model file is code-adjacent (its chat template runs, its weights
//! are trusted), and over plain HTTP anyone on the path could swap it. Credentials in a
//! URL (`user:pass@`) are refused rather than sent.

use std::fmt;

use anyhow::{bail, Context};

/// An absolute `http`/`https` URL, split into the parts the client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// `https` or `http`.
    pub scheme: &'static str,
    /// Lower-case host name, IPv4 address, or IPv6 address in brackets.
    pub host: String,
    /// The port written in the URL, if any.
    pub port: Option<u16>,
    /// Path and query, starting with `/`; no fragment.
    pub path: String,
}

impl Url {
    /// Parses an absolute URL. The path is kept as written (percent escapes included).
    pub fn parse(text: &str) -> anyhow::Result<Url> {
        let (scheme, rest) = text
            .split_once("://")
            .with_context(|| format!("{text}: not an absolute URL"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => "https",
            "http" => "http",
            other => bail!("{text}: unsupported scheme '{other}' (https only)"),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            bail!("{text}: credentials in the URL are not supported (HF_TOKEN is sent to the hub)");
        }
        if text.chars().any(|c| c.is_control() || c == ' ') {
            bail!("{text:?}: control characters or spaces in the URL");
        }
        let (host, port) =
            split_host_port(authority).with_context(|| format!("{text}: bad host"))?;
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Url {
            scheme,
            host,
            port,
            path,
        })
    }

    /// The URL a `Location` header points to, read against this one: absolute,
    /// scheme-relative (`//host/path`), absolute-path (`/path`) or relative (`name`).
    pub fn join(&self, location: &str) -> anyhow::Result<Url> {
        if location.contains("://") {
            return Url::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Url::parse(&format!("{}://{rest}", self.scheme));
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Url::parse(&format!("{}://{}{path}", self.scheme, self.authority()))
    }

    /// `host` or `host:port`, as the URL wrote it.
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    /// Scheme, host and port (the scheme's default when none was written): two URLs
    /// with the same origin are the same server, in the browser's sense.
    pub fn origin(&self) -> (&'static str, &str, u16) {
        let default = if self.scheme == "https" { 443 } else { 80 };
        (self.scheme, &self.host, self.port.unwrap_or(default))
    }

    /// Whether the host is this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.as_str();
        host == "localhost"
            || host.ends_with(".localhost")
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Refuses what `hearth pull` must not fetch: plain `http://` to another machine.
    pub fn check_fetchable(&self) -> anyhow::Result<()> {
        if self.scheme == "http" && !self.is_loopback() {
            bail!(
                "{self}: plain http:// is only allowed to this machine (localhost, 127.0.0.1); \
                 a model downloaded over http could be altered on the way, use https://"
            );
        }
        Ok(())
    }

    /// The path's last segment, percent-decoded, if it is a usable file name.
    pub fn file_name(&self) -> Option<String> {
        let path = self.path.split('?').next()?;
        let last = path.rsplit('/').next().filter(|l| !l.is_empty())?;
        percent_decode(last)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority(), self.path)
    }
}

/// `host[:port]`, the host lower-cased; IPv6 literals keep their brackets.
fn split_host_port(authority: &str) -> anyhow::Result<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').context("unclosed '['")?;
        let host = &authority[..end + 2];
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').context("junk after ']'")?),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c))
    {
        bail!("'{host}' is not a host name");
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().with_context(|| format!("port '{p}'"))?),
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// `%XX` escapes decoded; `None` if an escape is malformed or the result is not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Path segments percent-encoded where they are not URL-safe (a file name with a space
/// or `#`); `/` is kept, as the hub's `resolve` paths use it between folders.
pub(crate) fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/+=,@!$&'()*;:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let u = Url::parse("HTTPS://Hub.Example:8443/a/b.gguf?x=1#frag").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "hub.example");
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.path, "/a/b.gguf?x=1");
        assert_eq!(u.to_string(), "https://hub.example:8443/a/b.gguf?x=1");
        assert_eq!(u.file_name().as_deref(), Some("b.gguf"));
        let v6 = Url::parse("http://[::1]:9/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", Some(9)));
        assert!(v6.is_loopback());
        assert_eq!(Url::parse("https://h").unwrap().path, "/");
    }

    #[test]
    fn refuses_what_it_cannot_fetch_safely() {
        for bad in [
            "ftp://h/x",
            "h/x",
            "https://user:pw@h/x",
            "https:///x",
            "https://h:99999/x",
            "https://h/a b",
            "https://h\n/x",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        let plain = Url::parse("http://models.example/x.gguf").unwrap();
        let err = plain.check_fetchable().unwrap_err().to_string();
        assert!(err.contains("only allowed to this machine"), "{err}");
        for ok in [
            "http://127.0.0.1:8/x",
            "http://localhost/x",
            "https://a.example/x",
        ] {
            Url::parse(ok).unwrap().check_fetchable().unwrap();
        }
        assert!(Url::parse("http://127.0.0.1.example/x")
            .unwrap()
            .check_fetchable()
            .is_err());
    }

    #[test]
    fn joins_redirect_locations() {
        let base = Url::parse("https://hub.example/org/repo/resolve/main/sub/f.gguf").unwrap();
        let cases = [
            (
                "https://cdn.example/blob?sig=1",
                "https://cdn.example/blob?sig=1",
            ),
            ("//cdn.example/x", "https://cdn.example/x"),
            ("/cdn/abc", "https://hub.example/cdn/abc"),
            (
                "g.gguf",
                "https://hub.example/org/repo/resolve/main/sub/g.gguf",
            ),
        ];
        for (location, want) in cases {
            assert_eq!(base.join(location).unwrap().to_string(), want, "{location}");
        }
        let a = Url::parse("https://hub.example/x").unwrap();
        let b = Url::parse("https://hub.example:443/y").unwrap();
        let c = Url::parse("http://hub.example/y").unwrap();
        assert_eq!(a.origin(), b.origin());
        assert_ne!(a.origin(), c.origin());
    }

    #[test]
    fn percent_coding() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_encode_path("sub/a b#.gguf"), "sub/a%20b%23.gguf");
    }
}
