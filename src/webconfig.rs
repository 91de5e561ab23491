//! TLS and basic auth for the HTTP endpoints, from a web configuration file in the format of the
//! Prometheus exporter-toolkit (`--web.config.file`), so the same file works for this exporter
//! and the others on the host:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional
//!   client_ca_file: clients.pem                    # optional
//!   min_version: TLS12                             # optional
//! http_server_config:
//!   headers: { X-Frame-Options: deny }             # optional
//! basic_auth_users:
//!   prometheus: $2y$10$...                         # bcrypt hashes (htpasswd -nBC 10 "")
//! ```
//!
//! As in the exporter-toolkit, basic auth guards every path (`/healthz` included), an unknown user
//! costs as much as a wrong password (a decoy hash), and results are cached so a scraper pays for
//! bcrypt once. Unlike it, the file is read once at start, and settings rustls cannot honour
//! (unverified client certificates, Go cipher-suite and curve names) are refused by name instead
//! of being ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// A web configuration that failed to load: the file, the field and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("web config {file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("web config {file}: {message}")]
    Syntax { file: String, message: String },
    #[error("web config {file}: {field}: {message}")]
    Field { file: String, field: String, message: String },
}

/// What the HTTP server needs: a TLS configuration (none = plain HTTP), the users allowed in
/// (none = no authentication) and extra response headers.
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: BTreeMap<String, String>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for WebConfig {
    // Hashes stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers.len())
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility; the server speaks HTTP/1.1.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The headers the exporter-toolkit lets a web config set, with their allowed values (none =
/// any value).
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// A certificate chain, key or CA bundle is a few KiB; this bounds a wrong path (`/dev/zero`).
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Read and validate a web configuration file (certificates and keys included).
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let file = path.display().to_string();
    let text = crate::config::read_text_bounded(path, crate::config::MAX_CONFIG_FILE, "a web configuration file")
        .map_err(|source| WebConfigError::Read { file: file.clone(), source })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &file, &dir)
}

/// Validate web configuration text; files it names are read relative to `dir`.
pub fn parse(text: &str, file: &str, dir: &Path) -> Result<WebConfig, WebConfigError> {
    let field = |field: &str, message: String| WebConfigError::Field {
        file: file.to_string(),
        field: field.to_string(),
        message,
    };
    let syntax = |message: String| WebConfigError::Syntax { file: file.to_string(), message };
    let text = crate::config::yaml_prelude(text).map_err(syntax)?;
    // The toolkit takes an empty file as "plain HTTP, no auth". Here it is an error: a file given
    // to secure the endpoints that secures nothing is a mistake (a truncated or wrong file), and
    // leaving out --web.config.file says "plain HTTP" plainly.
    let empty = || {
        syntax(
            "is empty: it configures neither TLS nor basic auth (leave out the web config to serve plain HTTP)"
                .to_string(),
        )
    };
    let raw: Raw = if text.trim().is_empty() {
        return Err(empty());
    } else {
        serde_norway::from_str::<Option<Raw>>(text).map_err(|e| syntax(e.to_string()))?.ok_or_else(empty)?
    };
    if raw.rate_limit.is_some() {
        return Err(field("rate_limit", "is not supported by deploy-journey".into()));
    }
    let mut out = WebConfig::default();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        let at = format!("basic_auth_users.{user}");
        if user.is_empty() || user.contains(':') {
            return Err(field(&at, "a user name must be non-empty and contain no ':'".into()));
        }
        // The hash itself is not repeated in the message.
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(field(
                &at,
                "is not a bcrypt hash (create one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')".into(),
            ));
        }
        out.users.insert(user, hash);
    }
    for (name, value) in raw.http_server_config.and_then(|h| h.headers).unwrap_or_default() {
        let at = format!("http_server_config.headers.{name}");
        let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) else {
            let names: Vec<&str> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(field(&at, format!("cannot be configured; the headers that can are {}", names.join(", "))));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(field(&at, format!("{value:?} is not one of {allowed:?}")));
        }
        let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) else {
            return Err(field(&at, "is not a valid HTTP header value".into()));
        };
        out.headers.push((n, v));
    }
    if let Some(tls) = raw.tls_server_config {
        out.tls = tls_config(tls, dir, &field)?;
    }
    if out.tls.is_none() && out.users.is_empty() && out.headers.is_empty() {
        return Err(empty());
    }
    Ok(out)
}

fn tls_config(
    t: RawTls,
    dir: &Path,
    field: &dyn Fn(&str, String) -> WebConfigError,
) -> Result<Option<Arc<rustls::ServerConfig>>, WebConfigError> {
    const AT: &str = "tls_server_config";
    let at = |name: &str| format!("{AT}.{name}");
    for (name, set) in [
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ] {
        if set {
            return Err(field(&at(name), "is not supported by deploy-journey (rustls chooses safe defaults)".into()));
        }
    }
    let nonempty = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let (cert_file, key_file, ca_file) = (nonempty(&t.cert_file), nonempty(&t.key_file), nonempty(&t.client_ca_file));
    let (cert, key, ca) = (nonempty(&t.cert), nonempty(&t.key), nonempty(&t.client_ca));
    let auth_type = nonempty(&t.client_auth_type);
    // The toolkit's rule: TLS is on when any of these is set; then a certificate and key are needed.
    let enabled = [&cert_file, &key_file, &ca_file, &cert, &key, &ca, &auth_type].iter().any(|v| v.is_some());
    if !enabled {
        return Ok(None);
    }
    let version = |name: &str, v: &Option<String>, default: u8| -> Result<u8, WebConfigError> {
        match nonempty(v).as_deref() {
            None => Ok(default),
            Some("TLS10") => Ok(10),
            Some("TLS11") => Ok(11),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(other) => Err(field(&at(name), format!("{other:?} is not one of TLS10, TLS11, TLS12, TLS13"))),
        }
    };
    let (min, max) = (version("min_version", &t.min_version, 12)?, version("max_version", &t.max_version, 13)?);
    if min > max {
        return Err(field(&at("min_version"), "is above max_version".into()));
    }
    // rustls speaks TLS 1.2 and 1.3 only, so a lower minimum changes nothing.
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = vec![];
    if min <= 12 && max >= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        return Err(field(&at("max_version"), "must be TLS12 or TLS13 (TLS 1.0 and 1.1 are not supported)".into()));
    }
    // Say what is missing before reading anything.
    if cert_file.is_none() && cert.is_none() {
        return Err(field(&at("cert_file"), "is required when TLS is configured (or give cert inline)".into()));
    }
    if key_file.is_none() && key.is_none() {
        return Err(field(&at("key_file"), "is required when TLS is configured (or give key inline)".into()));
    }
    let read = |name: &str, rel: &str| -> Result<(Vec<u8>, String), WebConfigError> {
        let p: PathBuf = dir.join(rel);
        let shown = p.display().to_string();
        crate::config::read_bounded(&p, MAX_PEM_FILE, "a PEM file")
            .map(|b| (b, shown.clone()))
            .map_err(|e| field(&at(name), format!("cannot read {shown}: {e}")))
    };
    let pem = |file_key: &str,
               inline_key: &str,
               file: &Option<String>,
               inline: &Option<String>|
     -> Result<Option<(Vec<u8>, String)>, WebConfigError> {
        match (file, inline) {
            (Some(_), Some(_)) => {
                Err(field(&at(file_key), format!("set one of {file_key} and {inline_key}, not both")))
            }
            (Some(f), None) => read(file_key, f).map(Some),
            (None, Some(text)) => Ok(Some((text.clone().into_bytes(), format!("the inline {inline_key}")))),
            (None, None) => Ok(None),
        }
    };
    let (Some((cert_pem, cert_from)), Some((key_pem, key_from))) =
        (pem("cert_file", "cert", &cert_file, &cert)?, pem("key_file", "key", &key_file, &key)?)
    else {
        return Err(field(&at("cert_file"), "and key_file are required when TLS is configured".into()));
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| field(&at("cert_file"), format!("{cert_from}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(field(&at("cert_file"), format!("{cert_from}: holds no PEM certificate")));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| field(&at("key_file"), format!("{key_from}: no PEM private key: {e}")))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| field(&at("min_version"), e.to_string()))?;

    let ca_pem = pem("client_ca_file", "client_ca", &ca_file, &ca)?;
    let builder = match auth_type.as_deref() {
        None | Some("NoClientCert") => {
            if ca_pem.is_some() {
                return Err(field(
                    &at("client_auth_type"),
                    "client_ca_file is set but client_auth_type is NoClientCert; use RequireAndVerifyClientCert".into(),
                ));
            }
            builder.with_no_client_auth()
        }
        Some(kind @ ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven")) => {
            let Some((ca_pem, ca_from)) = ca_pem else {
                return Err(field(&at("client_ca_file"), format!("is required with client_auth_type {kind}")));
            };
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca_pem) {
                let c = c.map_err(|e| field(&at("client_ca_file"), format!("{ca_from}: not PEM certificates: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| field(&at("client_ca_file"), format!("{ca_from}: unusable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(field(&at("client_ca_file"), format!("{ca_from}: holds no PEM certificate")));
            }
            let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if kind == "VerifyClientCertIfGiven" {
                v = v.allow_unauthenticated();
            }
            let verifier = v.build().map_err(|e| field(&at("client_ca_file"), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        Some(kind @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert")) => {
            return Err(field(
                &at("client_auth_type"),
                format!(
                    "{kind} accepts client certificates without verifying them and is not supported; use RequireAndVerifyClientCert"
                ),
            ));
        }
        Some(other) => {
            return Err(field(
                &at("client_auth_type"),
                format!("{other:?} is not one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"),
            ));
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| field(&at("key_file"), format!("{key_from} does not fit {cert_from}: {e}")))?;
    cfg.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(cfg)))
}

// ------------------------------------------------------------------ basic auth

/// Verified credentials remembered (least recently used dropped first; a scraper or two and
/// their rotations need a handful).
const AUTH_CACHE_CAP: usize = 1024;
/// Clients whose failed attempts are tracked; the least recently seen is forgotten first.
const CLIENTS_CAP: usize = 4096;
/// Failed attempts a client may make at once, and how many more per second after that. An
/// attempt takes a token before bcrypt runs and gives it back when the password was right.
const FAIL_BURST: f64 = 30.0;
const FAIL_PER_SEC: f64 = 1.0;

/// Basic auth over the configured users, as the exporter-toolkit does it, hardened against a
/// flood of wrong passwords: a correct password, once verified, is answered from a bounded LRU
/// cache without waiting for any bcrypt work; bcrypt runs on the blocking pool, a few at a time;
/// and each client address may fail only so often (then 429 with `Retry-After`, no bcrypt).
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// A hash of the configured users' highest cost for unknown users, so their answer takes as
    /// long as a wrong password's (no user enumeration by timing).
    decoy: String,
    /// HMAC key for cache keys: a cache entry reveals nothing about the password, even to
    /// someone who can read this process's memory.
    cache_key: [u8; 32],
    /// HMAC(user, hash, password) of credentials that verified. Only successes: a failure
    /// cached would let a flood of distinct wrong passwords push the right one out.
    verified: Mutex<lru::LruCache<[u8; 32], ()>>,
    /// Failed-attempt budgets by client address (an IPv6 /64 counts as one client).
    clients: Mutex<lru::LruCache<std::net::IpAddr, Bucket>>,
    /// bcrypt checks running at once: they use the blocking pool, at most this many cores.
    bcrypt: Arc<tokio::sync::Semaphore>,
    /// Requests refused: wrong or missing credentials (401), too many failures (429).
    unauthorized: std::sync::atomic::AtomicU64,
    rate_limited: std::sync::atomic::AtomicU64,
}

/// Requests basic auth refused since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthRejections {
    pub unauthorized: u64,
    pub rate_limited: u64,
}

/// A token bucket of failed attempts.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl WebConfig {
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// `router` behind the configured basic auth and headers (unchanged when neither is set),
    /// and the basic auth's state when users are configured (for its counts).
    pub fn wrap(&self, router: axum::Router) -> (axum::Router, Option<Arc<BasicAuth>>) {
        if self.users.is_empty() && self.headers.is_empty() {
            return (router, None);
        }
        let auth = self.basic_auth();
        let counted = self.has_users().then(|| auth.clone());
        (router.layer(axum::middleware::from_fn_with_state(auth, guard)), counted)
    }

    /// The basic-auth state `wrap` uses.
    pub fn basic_auth(&self) -> Arc<BasicAuth> {
        let cost = self.users.values().filter_map(|h| h.parse::<bcrypt::HashParts>().ok()).map(|p| p.get_cost()).max();
        let decoy = cost.and_then(|c| bcrypt::hash("deploy-journey decoy password", c).ok()).unwrap_or_default();
        // Half the cores for bcrypt (at least one): the rest keeps serving scrapes and polling.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cap = |n: usize| std::num::NonZeroUsize::new(n).unwrap_or(std::num::NonZeroUsize::MIN);
        Arc::new(BasicAuth {
            users: self.users.clone(),
            headers: self.headers.clone(),
            decoy,
            cache_key: rand::random(),
            verified: Mutex::new(lru::LruCache::new(cap(AUTH_CACHE_CAP))),
            clients: Mutex::new(lru::LruCache::new(cap(CLIENTS_CAP))),
            bcrypt: Arc::new(tokio::sync::Semaphore::new((cores / 2).max(1))),
            unauthorized: std::sync::atomic::AtomicU64::new(0),
            rate_limited: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

/// What basic auth decided about a request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    Deny,
    /// Too many failed attempts from this client: try again after this many seconds.
    Slow(u64),
}

async fn guard(State(auth): State<Arc<BasicAuth>>, req: Request, next: Next) -> Response {
    // Only the header crosses the await: a request body is not `Sync`.
    let credentials = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let verdict = if auth.users.is_empty() { Verdict::Allow } else { auth.check(credentials.as_deref(), client).await };
    let mut resp = match verdict {
        Verdict::Allow => next.run(req).await,
        Verdict::Deny => {
            auth.unauthorized.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic")], "Unauthorized\n").into_response()
        }
        Verdict::Slow(secs) => {
            auth.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "Too many failed logins; try again later\n").into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
    };
    for (n, v) in &auth.headers {
        resp.headers_mut().insert(n.clone(), v.clone());
    }
    resp
}

/// User and password of a `Basic` authorization header; the scheme name is case-insensitive
/// (RFC 9110 §11.1, RFC 7617).
fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, rest) = authorization.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string()))
}

/// The address a client's failures are counted under: an IPv6 client usually has a whole /64.
fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

impl BasicAuth {
    pub fn rejections(&self) -> AuthRejections {
        use std::sync::atomic::Ordering::Relaxed;
        AuthRejections { unauthorized: self.unauthorized.load(Relaxed), rate_limited: self.rate_limited.load(Relaxed) }
    }

    async fn check(&self, authorization: Option<&str>, client: std::net::IpAddr) -> Verdict {
        use hmac::Mac;
        let Some((user, pass)) = authorization.and_then(basic_credentials) else {
            return Verdict::Deny;
        };
        let (known, hash) = match self.users.get(&user) {
            Some(h) => (true, h.clone()),
            None => (false, self.decoy.clone()),
        };
        let key: [u8; 32] = {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.cache_key).expect("any key length");
            for part in [user.as_bytes(), hash.as_bytes(), pass.as_bytes()] {
                m.update(&(part.len() as u64).to_le_bytes());
                m.update(part);
            }
            m.finalize().into_bytes().into()
        };
        if known && self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(&key).is_some() {
            return Verdict::Allow;
        }
        let client = client_key(client);
        if let Err(wait) = self.take(client) {
            return Verdict::Slow(wait);
        }
        let ok = {
            let Ok(slot) = self.bcrypt.clone().acquire_owned().await else { return Verdict::Deny };
            // bcrypt at cost 10 takes tens of milliseconds: off the async workers. The slot goes
            // with it: a request given up on (timeout, client gone) does not free it early. Go's
            // bcrypt refuses passwords over 72 bytes instead of truncating them; the
            // non-truncating check does too.
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                bcrypt::non_truncating_verify(pass, &hash).unwrap_or(false)
            })
            .await
            .unwrap_or(false)
        };
        if ok && known {
            self.verified.lock().unwrap_or_else(|e| e.into_inner()).put(key, ());
            self.give_back(client);
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }

    /// Take a failed-attempt token of `client`; when none is left, how many seconds until one is.
    fn take(&self, client: std::net::IpAddr) -> Result<(), u64> {
        let now = std::time::Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let b = clients.get_or_insert_mut(client, || Bucket { tokens: FAIL_BURST, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * FAIL_PER_SEC).min(FAIL_BURST);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / FAIL_PER_SEC).ceil().max(1.0) as u64)
        }
    }

    fn give_back(&self, client: std::net::IpAddr) {
        if let Some(b) = self.clients.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&client) {
            b.tokens = (b.tokens + 1.0).min(FAIL_BURST);
        }
    }
}

// TLS handshakes happen in `server::serve`, per connection and within a connection slot, with
// the header-read timeout as their limit.

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "web.yml", Path::new("/nonexistent")).unwrap_err().to_string()
    }

    #[test]
    fn a_file_that_configures_nothing_is_an_error() {
        for text in ["", "\n# nothing yet\n", "~\n", "{}\n", "basic_auth_users: {}\n", "tls_server_config: {}\n"] {
            let e = err(text);
            assert!(
                e.starts_with("web config web.yml: is empty: it configures neither TLS nor basic auth"),
                "{text:?}: {e}"
            );
        }
        // A byte order mark is not part of the YAML.
        let ok = parse("\u{feff}http_server_config: {headers: {X-Frame-Options: deny}}\n", "web.yml", Path::new("."));
        assert!(ok.is_ok(), "{ok:?}");
        let deep = format!("basic_auth_users: {}{}\n", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(err(&deep), "web config web.yml: nesting deeper than 64 levels at line 1");
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases = [
            ("tls_server_config: {cert_file: a.crt}\n", "tls_server_config.key_file"),
            ("tls_server_config: {key_file: a.key}\n", "tls_server_config.cert_file"),
            ("tls_server_config: {cert_file: a.crt, key_file: a.key}\n", "tls_server_config.cert_file: cannot read"),
            ("tls_server_config: {client_auth_type: RequireAnyClientCert}\n", "tls_server_config.cert_file"),
            ("tls_server_config: {cipher_suites: [TLS_AES_128_GCM_SHA256]}\n", "tls_server_config.cipher_suites"),
            ("tls_server_config: {min_version: TLS9, cert: x, key: y}\n", "tls_server_config.min_version"),
            ("basic_auth_users: {alice: plaintext}\n", "basic_auth_users.alice: is not a bcrypt hash"),
            ("basic_auth_users: {\"a:b\": x}\n", "basic_auth_users.a:b"),
            ("http_server_config: {headers: {X-Frame-Options: allow}}\n", "http_server_config.headers.X-Frame-Options"),
            ("http_server_config: {headers: {Server: x}}\n", "http_server_config.headers.Server"),
            ("rate_limit: {interval: 1s, burst: 2}\n", "rate_limit"),
            ("basic_auth_user: {}\n", "unknown field `basic_auth_user`"),
            ("tls_server_config: {cert_fle: a}\n", "unknown field `cert_fle`"),
            ("tls_server_config: [1]\n", "tls_server_config"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.starts_with("web config web.yml: "), "{text}: {e}");
            assert!(e.contains(want), "{text}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn basic_credentials_take_the_scheme_in_any_case() {
        fn check(header: &str, expect: Option<(&str, &str)>) {
            let got = basic_credentials(header);
            assert_eq!(got.as_ref().map(|(u, p)| (u.as_str(), p.as_str())), expect, "{header:?}");
        }
        // "prometheus:s3cret:x" — a password may contain ':'.
        let b64 = "cHJvbWV0aGV1czpzM2NyZXQ6eA==";
        for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
            check(&format!("{scheme} {b64}"), Some(("prometheus", "s3cret:x")));
        }
        check(&format!("Basic   {b64} "), Some(("prometheus", "s3cret:x")));
        check(&format!("Bearer {b64}"), None);
        check(&format!("Basic{b64}"), None);
        check("Basic !!!", None);
        check("Basic bm9jb2xvbg==", None); // "nocolon"
        check("", None);
    }

    #[test]
    fn failures_are_counted_per_client_and_ipv6_per_64() {
        fn check(ip: &str, expect: &str) {
            assert_eq!(client_key(ip.parse().unwrap()).to_string(), expect, "{ip}");
        }
        check("192.0.2.7", "192.0.2.7");
        check("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::");
        check("::ffff:192.0.2.7", "192.0.2.7");
    }

    #[test]
    fn a_client_out_of_failures_waits_and_a_success_gives_its_token_back() {
        let cfg = WebConfig { users: [("u".to_string(), "x".to_string())].into(), ..Default::default() };
        let auth = cfg.basic_auth();
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..FAIL_BURST as usize {
            assert_eq!(auth.take(a), Ok(()));
        }
        let wait = auth.take(a).unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        assert_eq!(auth.take(b), Ok(()), "another client has its own budget");
        auth.give_back(a);
        assert_eq!(auth.take(a), Ok(()));
        assert!(auth.take(a).is_err());
    }

    #[test]
    fn a_bad_hash_is_not_repeated_in_the_error() {
        let e = err("basic_auth_users: {alice: hunter2-not-a-hash}\n");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
