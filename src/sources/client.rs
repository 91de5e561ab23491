//! The HTTP request plumbing both sources share: retry policy and backoff, status and
//! transport error classification, bounded body reads, credential scrubbing, `Link` header
//! parsing and URL building. Counting requests and errors stays in
//! [`telemetry`](super::telemetry).

use std::time::Duration;

use super::{ErrorKind, SourceError};

/// Tries per request within one poll (the first and two retries).
pub(crate) const TRIES: usize = 3;
/// A server asking to wait longer than this within a poll ends the retrying; the next poll
/// tries again.
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Whether a failed request is worth another try within the same poll. Credentials, missing
/// things and bad requests do not fix themselves; rate limits are honoured across polls.
pub(crate) fn retryable(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Server | ErrorKind::Decode)
}

/// Exponential backoff with jitter for the retries of one request (backon's delays; the loop is
/// ours so the request can borrow the source).
pub(crate) fn backoff(base: Duration) -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(base)
        .with_max_delay(base.saturating_mul(8).max(base))
        .with_max_times(TRIES - 1)
        .build()
}

/// How long to sleep before the next try, or `None` to give up now.
pub(crate) fn next_delay(err: &SourceError, backoff: &mut impl Iterator<Item = Duration>) -> Option<Duration> {
    if !retryable(err.kind) {
        return None;
    }
    let d = backoff.next()?;
    match err.retry_after {
        Some(ra) if ra > MAX_RETRY_WAIT => None,
        Some(ra) => Some(ra.max(d)),
        None => Some(d),
    }
}

/// The kind of a non-success HTTP status (GitHub's rate-limit 403 is told apart by the caller).
pub(crate) fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Auth,
        404 | 410 => ErrorKind::NotFound,
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Server,
        _ => ErrorKind::Client,
    }
}

/// The kind and a credential-free description of a transport error.
pub(crate) fn describe_transport(e: reqwest::Error) -> (ErrorKind, String) {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_redirect() {
        // A redirect loop (or too many) is the server's or the URL's doing, not the network's.
        ErrorKind::Client
    } else if e.is_decode() {
        ErrorKind::Decode
    } else {
        // Refused, reset (also mid-body), DNS, TLS.
        ErrorKind::Connect
    };
    // The URL can carry userinfo; leave it out and name the causes instead.
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    (kind, detail)
}

/// A short, single-line excerpt of an error body for the error detail.
pub(crate) fn body_excerpt(body: &[u8], secrets: &[&str]) -> String {
    // Scrub before cutting (a secret cut at the edge would no longer be whole), but only the
    // start of the body: the excerpt shows 200 characters of it.
    let head = &body[..body.len().min(EXCERPT_SCAN)];
    let text = scrub(String::from_utf8_lossy(head).into_owned(), secrets);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = one_line.chars().take(200).collect();
    if one_line.chars().count() > 200 || head.len() < body.len() {
        cut.push('…');
    }
    // Joining lines can join pieces of a secret that contains spaces.
    scrub(cut, secrets)
}

/// What an error answer to a token request said, without any of its text: its size, and the
/// OAuth error code when it is one (RFC 6749 §5.2 codes are fixed ASCII words).
pub(crate) fn token_answer_error(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
    }
    let code = serde_json::from_slice::<OAuthError>(body)
        .ok()
        .map(|e| e.error)
        .filter(|c| !c.is_empty() && c.len() <= 40 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    match code {
        Some(c) => format!("error {c} ({} bytes; a token answer is not shown)", body.len()),
        None => format!("{} bytes (a token answer is not shown)", body.len()),
    }
}

/// Why a token answer did not decode, without its text: serde's message can quote a value
/// (`invalid type: string "eyJ…"`), so only the error class and position are given.
pub(crate) fn token_decode_error(e: &serde_json::Error, len: usize) -> String {
    let class = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "unexpected JSON shape",
        serde_json::error::Category::Eof => "cut off (unexpected end)",
    };
    format!(
        "token answer of {len} bytes: {class} at line {} column {} (a token answer is not shown)",
        e.line(),
        e.column()
    )
}

/// How much of an error body is searched for secrets and excerpted.
const EXCERPT_SCAN: usize = 16 << 10;

/// Remove every recognisable encoding of each secret from `s` (error texts are built without
/// credentials, but a server may echo what it was sent): see [`super::redact`].
pub(crate) fn scrub(s: String, secrets: &[&str]) -> String {
    super::redact::redact(&s, secrets)
}

/// Bounds of what is read of an answer. Lists (builds, commits, resources) are far below it;
/// a larger answer is an error, counted as `decode`, and is not read further.
pub(crate) const LIST_BODY_LIMIT: usize = 32 << 20;
/// A token answer (`/sky/issuer/token`) is a few kilobytes.
pub(crate) const TOKEN_BODY_LIMIT: usize = 256 << 10;
/// Of an error answer only an excerpt is shown; the rest is not read.
pub(crate) const ERROR_BODY_LIMIT: usize = 64 << 10;

/// Why a body could not be read whole.
pub(crate) enum BodyError {
    /// Larger than the limit: what the answer announced (Content-Length) or what was read.
    TooLarge {
        limit: usize,
        announced: Option<u64>,
    },
    Transport(reqwest::Error),
}

impl BodyError {
    /// The kind and a description, for a [`SourceError`].
    pub(crate) fn describe(self) -> (ErrorKind, String) {
        match self {
            BodyError::TooLarge { limit, announced: Some(n) } => {
                (ErrorKind::Decode, format!("answer of {n} bytes is over the {limit}-byte limit; not read"))
            }
            BodyError::TooLarge { limit, announced: None } => {
                (ErrorKind::Decode, format!("answer is over the {limit}-byte limit; stopped reading"))
            }
            BodyError::Transport(e) => describe_transport(e),
        }
    }
}

/// Read a body in chunks, stopping at `limit` bytes (a huge answer is never buffered whole).
pub(crate) async fn read_body(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    let announced = resp.content_length();
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit, announced });
    }
    let mut body = Vec::with_capacity(announced.unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit, announced: None });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Up to `limit` bytes of a body (an error answer: what comes after is not needed).
pub(crate) async fn read_body_prefix(resp: &mut reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = vec![];
    while body.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            _ => break,
        }
    }
    body
}

/// The target of the `Link` relation `rel` (RFC 8288; one header or several, comma-separated).
pub(crate) fn link_target(headers: &reqwest::header::HeaderMap, rel: &str) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for part in split_links(value) {
            let Some((target, params)) = part.trim().strip_prefix('<').and_then(|p| p.split_once('>')) else {
                continue;
            };
            let has_rel = params.split(';').any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=")
                    .map(|v| v.trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case(rel)))
                    .unwrap_or(false)
            });
            if has_rel {
                return Some(target.to_string());
            }
        }
    }
    None
}

/// Split a `Link` value at the commas between links (a URL may contain commas only inside `<>`).
fn split_links(value: &str) -> Vec<&str> {
    let mut out = vec![];
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in value.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth <= 0 => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// Whether two URLs share scheme, host and port (credentials go only to the configured origin).
pub(crate) fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// `base` with `segments` appended as path segments (each percent-encoded as needed).
pub(crate) fn url_with(base: &reqwest::Url, segments: &[&str]) -> reqwest::Url {
    let mut u = base.clone();
    if let Ok(mut p) = u.path_segments_mut() {
        p.pop_if_empty().extend(segments);
    }
    u
}

/// `application/x-www-form-urlencoded` (reqwest's `form` feature is not enabled here).
pub(crate) fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("http://form.invalid/").expect("static URL parses");
    u.query_pairs_mut().extend_pairs(pairs);
    u.query().unwrap_or("").to_string()
}

/// A configuration problem found while building a source's client.
pub(crate) fn config_error(source_name: &'static str, detail: String) -> SourceError {
    SourceError { source_name, kind: ErrorKind::Client, what: "configure".into(), detail, retry_after: None }
}

/// The base URL a source's requests are built on; `field` names it in the error.
pub(crate) fn base_url(source_name: &'static str, field: &str, raw: &str) -> Result<reqwest::Url, SourceError> {
    let u = reqwest::Url::parse(raw).map_err(|e| config_error(source_name, format!("{field} is not a URL: {e}")))?;
    if u.cannot_be_a_base() {
        return Err(config_error(source_name, format!("{field} cannot be a base URL")));
    }
    Ok(u)
}

/// Headers every request of every source carries.
pub(crate) fn common_headers() -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::USER_AGENT,
        reqwest::header::HeaderValue::from_static(concat!("deploy-journey/", env!("CARGO_PKG_VERSION"))),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, LINK};

    #[test]
    fn token_answers_are_described_without_their_text() {
        fn check(body: &str, expect: &str) {
            assert_eq!(token_answer_error(body.as_bytes()), expect, "{body}");
        }
        check(
            r#"{"error":"access_denied","error_description":"Invalid username or password"}"#,
            "error access_denied (76 bytes; a token answer is not shown)",
        );
        // A code that is not a plain word is not repeated.
        check(r#"{"error":"eyJhbGciOiJIUzI1NiJ9"}"#, "32 bytes (a token answer is not shown)");
        check("<html>502</html>", "16 bytes (a token answer is not shown)");

        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Reply {
            access_token: String,
            expires_in: u64,
        }
        fn decode(body: &str, expect: &str) {
            let e = serde_json::from_str::<Reply>(body).unwrap_err();
            assert_eq!(token_decode_error(&e, body.len()), expect, "{body}");
        }
        decode(
            r#"{"access_token":"SxKnlOWagNWhGbE4i+FQ"#,
            "token answer of 37 bytes: cut off (unexpected end) at line 1 column 37 (a token answer is not shown)",
        );
        decode(
            "{\"access_token\":\"SxKn\u{0}lOWag\"}",
            "token answer of 29 bytes: not JSON at line 1 column 22 (a token answer is not shown)",
        );
        // serde would quote the value: `invalid type: string "eyJ…"`.
        decode(
            r#"{"access_token":"a","expires_in":"eyJhbGciOiJIUzI1NiJ9"}"#,
            "token answer of 56 bytes: unexpected JSON shape at line 1 column 55 (a token answer is not shown)",
        );
    }

    #[test]
    fn link_relations_are_found_in_one_or_several_headers() {
        let mut h = HeaderMap::new();
        h.append(LINK, HeaderValue::from_static(r#"<https://x/a?to=2&limit=2>; rel="next""#));
        h.append(LINK, HeaderValue::from_static(r#"<https://x/a?from=4&limit=2>; rel="previous""#));
        assert_eq!(link_target(&h, "previous").as_deref(), Some("https://x/a?from=4&limit=2"));
        let mut g = HeaderMap::new();
        g.insert(
            LINK,
            HeaderValue::from_static(r#"<https://x/c?page=2>; rel="next", <https://x/c?page=9>; rel="last""#),
        );
        assert_eq!(link_target(&g, "next").as_deref(), Some("https://x/c?page=2"));
        assert_eq!(link_target(&g, "last").as_deref(), Some("https://x/c?page=9"));
        assert_eq!(link_target(&g, "prev"), None);
    }

    #[test]
    fn secrets_are_scrubbed_and_forms_encoded() {
        assert_eq!(scrub("a hunter2 b".into(), &["hunter2"]), "a *** b");
        assert_eq!(form_encode(&[("scope", "openid profile"), ("p", "a&b=c")]), "scope=openid+profile&p=a%26b%3Dc");
    }

    #[test]
    fn only_transient_kinds_are_retried_and_long_waits_end_retrying() {
        let err = |kind, retry_after| SourceError {
            source_name: "concourse",
            kind,
            what: "GET /x".into(),
            detail: String::new(),
            retry_after,
        };
        let mut b = backoff(Duration::from_millis(10));
        assert!(next_delay(&err(ErrorKind::Server, None), &mut b).is_some());
        assert!(next_delay(&err(ErrorKind::Auth, None), &mut b).is_none());
        assert!(next_delay(&err(ErrorKind::Server, Some(Duration::from_secs(600))), &mut b).is_none());
        let mut b = backoff(Duration::from_millis(10));
        assert_eq!(
            next_delay(&err(ErrorKind::Server, Some(Duration::from_secs(2))), &mut b),
            Some(Duration::from_secs(2))
        );
        assert!(next_delay(&err(ErrorKind::Server, None), &mut b).is_some());
        assert!(next_delay(&err(ErrorKind::Server, None), &mut b).is_none(), "{TRIES} tries in all");
    }
}
