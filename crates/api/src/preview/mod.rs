//! Preview URLs: HTTP and WebSocket access to apps that listen on ports inside sandboxes.
//!
//! Two URL forms reach port `P` of sandbox `S`, and the proxy listener accepts both:
//! - host style, `http://P-S.{base host}/...`, where the `Host` header names the target;
//! - path style, `http://{base host}/preview/S/P/...`, which the app receives as `/...`.
//!
//! A signed preview URL has a signed token in place of `S`. Public sandboxes need no token;
//! private ones need the sandbox's preview token (or a signed token of that port) in the
//! `x-daytona-preview-token` header, the `DAYTONA_SANDBOX_AUTH_KEY` query parameter or the
//! cookie that a request with a token in its URL sets, or an API key of the sandbox's
//! organization in `Authorization: Bearer`.

mod proxy;
mod upstream;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use rand::RngCore;

use crate::config::{PreviewConfig, PreviewUrlStyle};

pub use proxy::router;
pub use upstream::Previews;

/// Request header that carries a preview token.
pub const TOKEN_HEADER: &str = "x-daytona-preview-token";

/// Query parameter that carries a preview token, for clients that cannot set headers.
pub const TOKEN_QUERY: &str = "DAYTONA_SANDBOX_AUTH_KEY";

/// Prefix of the path-style form.
const PATH_PREFIX: &str = "/preview/";

/// Length in bytes of a signed preview token's random part; its text is twice as long (hex),
/// which with a port and a dash still fits a 63-character DNS label.
const SIGNED_TOKEN_BYTES: usize = 24;

/// Returns the preview URL of a sandbox's port, with `key` (the sandbox id or a signed
/// token) naming the target.
pub fn url(config: &PreviewConfig, key: &str, port: u16) -> String {
    format_url(config, key, &port.to_string())
}

/// Returns the preview URL template of `GET /config`, as Daytona writes it.
pub fn template_url(config: &PreviewConfig) -> String {
    format_url(config, "{{sandboxId}}", "{{PORT}}")
}

fn format_url(config: &PreviewConfig, key: &str, port: &str) -> String {
    let base = config.base();
    match config.url_style {
        PreviewUrlStyle::Host => match base.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://{port}-{key}.{host}"),
            None => format!("http://{port}-{key}.{base}"),
        },
        PreviewUrlStyle::Path => format!("{base}{PATH_PREFIX}{key}/{port}"),
    }
}

/// Makes the random part of a new signed preview URL: lowercase hex, which is valid in a
/// host name label and never has the form of a sandbox id (a UUID with dashes).
pub fn new_signed_token() -> String {
    let mut bytes = [0u8; SIGNED_TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `key` has the form of a signed token rather than a sandbox id.
fn is_signed_token(key: &str) -> bool {
    key.len() == SIGNED_TOKEN_BYTES * 2 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The sandbox port a preview request is for, and the path the app receives.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// The sandbox id, or a signed token.
    key: String,
    port: u16,
    /// Path and query for the app; the path-style prefix removed.
    path_and_query: String,
    /// Whether the request used the path style, which scopes the cookie to the prefix.
    path_style: bool,
}

impl Target {
    /// Reads the target from a `Host` of the form `{port}-{key}.{domain}[:port]`, else from
    /// a path of the form `/preview/{key}/{port}/...`.
    fn parse(host: Option<&str>, path_and_query: &str) -> Option<Self> {
        if let Some(target) = host.and_then(|host| Self::from_host(host, path_and_query)) {
            return Some(target);
        }
        Self::from_path(path_and_query)
    }

    fn from_host(host: &str, path_and_query: &str) -> Option<Self> {
        let (label, domain) = host.split_once('.')?;
        if domain.is_empty() {
            return None;
        }
        let (port, key) = label.split_once('-')?;
        let port = parse_port(port)?;
        if key.is_empty() {
            return None;
        }
        Some(Self {
            key: key.to_ascii_lowercase(),
            port,
            path_and_query: path_and_query.to_owned(),
            path_style: false,
        })
    }

    fn from_path(path_and_query: &str) -> Option<Self> {
        let rest = path_and_query.strip_prefix(PATH_PREFIX)?;
        let (key, rest) = rest.split_once('/')?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let port = parse_port(&rest[..end])?;
        let rest = &rest[end..];
        let path_and_query = if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        };
        (!key.is_empty()).then(|| Self {
            key: key.to_owned(),
            port,
            path_and_query,
            path_style: true,
        })
    }

    /// Name of the cookie that carries a token for this target's sandbox.
    fn cookie_name(&self, sandbox_id: &str) -> String {
        format!("daytona-preview-{sandbox_id}")
    }

    /// Path attribute of the token cookie: the prefix in the path style, else the whole host.
    fn cookie_path(&self) -> String {
        if self.path_style {
            format!("{PATH_PREFIX}{}/{}", self.key, self.port)
        } else {
            "/".to_owned()
        }
    }
}

/// Parses a port of 1 to 65535 written in decimal without a sign or leading zeros.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Where a request presented a preview token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Header,
    Query,
    Cookie,
}

/// Returns the tokens a request presents, in the order header, query, cookie.
fn presented_tokens(
    headers: &HeaderMap,
    query: Option<&str>,
    cookie_name: &str,
) -> Vec<(TokenSource, String)> {
    let mut tokens = Vec::new();
    for value in headers.get_all(TOKEN_HEADER) {
        if let Ok(value) = value.to_str() {
            tokens.push((TokenSource::Header, value.trim().to_owned()));
        }
    }
    if let Some(query) = query {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if name == TOKEN_QUERY {
                tokens.push((TokenSource::Query, value.into_owned()));
            }
        }
    }
    for (name, value) in cookies(headers) {
        if name == cookie_name {
            tokens.push((TokenSource::Cookie, value.to_owned()));
        }
    }
    tokens.retain(|(_, token)| !token.is_empty());
    tokens
}

/// The name and value of every cookie of the request's `Cookie` headers.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// Removes the token parameter from a path and query, keeping the other parameters as sent.
pub fn without_token_query(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            name != TOKEN_QUERY
        })
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(style: PreviewUrlStyle) -> PreviewConfig {
        PreviewConfig {
            listen: "127.0.0.1:4000".parse().unwrap(),
            url_style: style,
            base_url: Some("http://localhost:4000".to_owned()),
            tls: false,
        }
    }

    #[test]
    fn url_host_and_path_styles() {
        let id = "0b6c3b1e-5d4c-4f53-9d0a-1f1e2a3b4c5d";
        assert_eq!(
            url(&config(PreviewUrlStyle::Host), id, 8080),
            format!("http://8080-{id}.localhost:4000")
        );
        assert_eq!(
            url(&config(PreviewUrlStyle::Path), id, 8080),
            format!("http://localhost:4000/preview/{id}/8080")
        );
    }

    #[test]
    fn target_from_host() {
        let target = Target::parse(Some("3000-abc-def.localhost:4000"), "/x?y=1").unwrap();
        assert_eq!(target.key, "abc-def");
        assert_eq!(target.port, 3000);
        assert_eq!(target.path_and_query, "/x?y=1");
        assert!(!target.path_style);
    }

    #[test]
    fn target_from_path() {
        let target = Target::parse(Some("127.0.0.1:4000"), "/preview/abc/3000/x?y=1").unwrap();
        assert_eq!(target.key, "abc");
        assert_eq!(target.port, 3000);
        assert_eq!(target.path_and_query, "/x?y=1");
        let bare = Target::parse(None, "/preview/abc/3000?y=1").unwrap();
        assert_eq!(bare.path_and_query, "/?y=1");
        let root = Target::parse(None, "/preview/abc/3000").unwrap();
        assert_eq!(root.path_and_query, "/");
    }

    #[test]
    fn target_rejects_bad_ports() {
        for host in [
            "0-abc.localhost",
            "65536-abc.localhost",
            "08-abc.localhost",
            "x-abc.localhost",
        ] {
            assert_eq!(Target::parse(Some(host), "/"), None, "{host}");
        }
        assert_eq!(
            Target::parse(Some("localhost"), "/preview/abc/99999/"),
            None
        );
        assert_eq!(Target::parse(Some("localhost"), "/other"), None);
    }

    #[test]
    fn token_query_removed() {
        assert_eq!(without_token_query("/a?DAYTONA_SANDBOX_AUTH_KEY=t"), "/a");
        assert_eq!(
            without_token_query("/a?x=1&DAYTONA_SANDBOX_AUTH_KEY=t&y=%20"),
            "/a?x=1&y=%20"
        );
        assert_eq!(without_token_query("/a"), "/a");
    }

    #[test]
    fn tokens_from_every_source() {
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN_HEADER, "h".parse().unwrap());
        headers.insert(COOKIE, "a=b; daytona-preview-s=c".parse().unwrap());
        let tokens = presented_tokens(
            &headers,
            Some("DAYTONA_SANDBOX_AUTH_KEY=q"),
            "daytona-preview-s",
        );
        assert_eq!(
            tokens,
            vec![
                (TokenSource::Header, "h".to_owned()),
                (TokenSource::Query, "q".to_owned()),
                (TokenSource::Cookie, "c".to_owned()),
            ]
        );
    }

    #[test]
    fn signed_tokens_are_not_ids() {
        assert!(is_signed_token(&new_signed_token()));
        assert!(!is_signed_token("0b6c3b1e-5d4c-4f53-9d0a-1f1e2a3b4c5d"));
    }
}
