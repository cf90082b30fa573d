//! Remote URLs: credentials embedded in them, the host a credential belongs to, and redaction
//! of passwords in text.

use super::cli::Credentials;

/// The protocol and host (with its port, if any) of an HTTP remote, as git's credential
/// protocol names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    pub protocol: String,
    pub host: String,
}

/// Parts of a `scheme://authority/rest` URL.
struct UrlParts<'a> {
    scheme: &'a str,
    /// `user[:password]` before the last `@` of the authority.
    userinfo: Option<&'a str>,
    /// `host[:port]`.
    host: &'a str,
    /// Everything after the authority, starting with `/`, `?` or `#` (or empty).
    rest: &'a str,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, after) = url.split_once("://")?;
    let valid_scheme = scheme.chars().next()?.is_ascii_alphabetic()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid_scheme {
        return None;
    }
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(authority_end);
    let (userinfo, host) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    Some(UrlParts {
        scheme,
        userinfo,
        host,
        rest,
    })
}

/// Removes a `user:password@` part from a URL, so that it is not stored in `.git/config`,
/// and returns the credentials it held (percent-decoded). A user name without a password is
/// kept in the URL: it is not a secret, and git uses it to ask for the right credential.
pub fn take_credentials(url: &str) -> (String, Option<Credentials>) {
    let Some(parts) = split_url(url) else {
        return (url.to_owned(), None);
    };
    let Some((user, password)) = parts.userinfo.and_then(|info| info.split_once(':')) else {
        return (url.to_owned(), None);
    };
    let clean = format!("{}://{}{}", parts.scheme, parts.host, parts.rest);
    let credentials = Credentials {
        username: percent_decode(user),
        password: percent_decode(password),
    };
    (clean, Some(credentials))
}

/// Returns the scope of credentials for `url`, if it is an HTTP or HTTPS URL.
pub fn credential_scope(url: &str) -> Option<CredentialScope> {
    let parts = split_url(url)?;
    let protocol = parts.scheme.to_ascii_lowercase();
    if protocol != "http" && protocol != "https" {
        return None;
    }
    Some(CredentialScope {
        protocol,
        host: parts.host.to_owned(),
    })
}

/// Replaces the password of every `scheme://user:password@host` URL in `text` by `***`.
pub fn redact_urls(text: &str) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let authority_start = start + 3;
        redacted.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        // The authority ends where a URL in a message may end: at a path, a quote or a space.
        let end = after
            .find(|c: char| "/?#'\"` \t\r\n".contains(c))
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority
            .rfind('@')
            .map(|at| (&authority[..at], &authority[at..]))
        {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                redacted.push_str(user);
                redacted.push_str(":***");
                redacted.push_str(host);
            }
            _ => redacted.push_str(authority),
        }
        rest = &after[end..];
    }
    redacted.push_str(rest);
    redacted
}

/// Decodes `%XX` escapes; invalid escapes stay as they are, and invalid UTF-8 becomes U+FFFD.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_credentials_are_taken_out() {
        let (clean, credentials) = take_credentials(
            "https://user%40example.com:p%40ss%2Fw%23rd@git.example.com:8443/org/repo.git",
        );
        assert_eq!(clean, "https://git.example.com:8443/org/repo.git");
        let credentials = credentials.unwrap();
        assert_eq!(credentials.username, "user@example.com");
        assert_eq!(credentials.password, "p@ss/w#rd");
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        for url in [
            "https://git.example.com/org/repo.git",
            "https://user@git.example.com/org/repo.git",
            "git@github.com:org/repo.git",
            "/srv/repos/r.git",
        ] {
            let (clean, credentials) = take_credentials(url);
            assert_eq!(clean, url);
            assert!(credentials.is_none(), "{url}");
        }
    }

    #[test]
    fn scope_is_http_protocol_and_host_with_port() {
        assert_eq!(
            credential_scope("http://127.0.0.1:8080/r.git"),
            Some(CredentialScope {
                protocol: "http".to_owned(),
                host: "127.0.0.1:8080".to_owned()
            })
        );
        assert_eq!(
            credential_scope("https://u@git.example.com/r")
                .unwrap()
                .host,
            "git.example.com"
        );
        assert_eq!(credential_scope("ssh://git@host/r.git"), None);
        assert_eq!(credential_scope("git://host/r.git"), None);
        assert_eq!(credential_scope("/srv/r.git"), None);
    }

    #[test]
    fn redaction_hides_url_passwords() {
        assert_eq!(
            redact_urls("fatal: unable to access 'https://me:secret@host/r.git/': 403"),
            "fatal: unable to access 'https://me:***@host/r.git/': 403"
        );
        assert_eq!(
            redact_urls("see http://host/a and https://u@h/b"),
            "see http://host/a and https://u@h/b"
        );
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
    }
}
