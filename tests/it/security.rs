//! Security: no credential leaks into any output, webhooks need a valid signature, only GETs and
//! the token grant go to Concourse, and TLS and basic auth (exporter-toolkit web config) work end
//! to end with a real HTTP client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::faults::FaultRule;
use deploy_journey::sim::workload::Scenario;

use crate::support::{client, init_crypto, spawn_sim};

// Recognisable credentials: any of them (or a long enough piece) in an output is a leak. No two
// share a 12-character piece, so a finding names the right one.
const GITHUB_TOKEN: &str = "ghp_LEAKCANARYgithub7c1e5a";
const CONCOURSE_PASSWORD: &str = "LEAKCANARYconcourse3b9d";
const WEBHOOK_SECRET: &str = "LEAKCANARYwebhook51f08e";
const OTLP_HEADER: &str = "LEAKCANARYotlp8e2d44";
const WRONG_GITHUB_TOKEN: &str = "github_pat_LEAKCANARYbadtoken94a";
const WRONG_PASSWORD: &str = "LEAKCANARYwrongpw0d7c1";

const LANA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `examples/lana.yaml` pointed at the simulator, with a webhook secret and a fast poll.
pub(crate) fn config_text(sim_url: &str, state: &Path, port: u16, poll: &str) -> String {
    let text = std::fs::read_to_string(LANA).unwrap();
    let out = text
        .replace("https://api.github.com", sim_url)
        .replace("https://ci.galoy.io", sim_url)
        .replace("/var/lib/deploy-journey/state.db", state.to_str().unwrap())
        .replace("0.0.0.0:9853", &format!("127.0.0.1:{port}"))
        .replace("poll_interval: 30s", &format!("poll_interval: {poll}"))
        .replace(
            "  token_env: GITHUB_TOKEN\n",
            // GitHub polled every cycle too (not the webhook's slow safety poll), so its
            // faults meet requests.
            &format!(
                "  token_env: GITHUB_TOKEN\n  webhook_secret_env: GITHUB_WEBHOOK_SECRET\n  poll_interval: {poll}\n"
            ),
        );
    assert!(
        out.contains("webhook_secret_env") && out.contains(&format!("poll_interval: {poll}")),
        "lana.yaml changed shape"
    );
    out
}

/// Every place a secret could show up in `text`: the whole secret, or a 12-character piece of it
/// (a truncated excerpt), or the whole secret in an encoding it can travel or be echoed in:
/// form/URL-encoded, JSON-escaped (also Go's `\u0026` style), HTML-escaped, base64 (alone and
/// as the basic auth of `deploy-journey:<secret>`, both alphabets).
fn leaks(text: &str, secrets: &[&str]) -> Vec<String> {
    let mut found = vec![];
    for s in secrets {
        let pieces: Vec<String> =
            (0..=s.len().saturating_sub(12)).map(|i| s[i..i + 12.min(s.len())].to_string()).collect();
        for p in pieces.iter().chain(encodings(s).iter()) {
            if text.contains(p.as_str()) {
                found.push(format!("{s:?} (as {p:?})"));
                break;
            }
        }
    }
    found
}

fn encodings(s: &str) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let form = {
        let mut u = reqwest::Url::parse("http://x/").unwrap();
        u.query_pairs_mut().append_pair("p", s);
        u.query().unwrap()[2..].to_string()
    };
    let pct: String = s
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let json = serde_json::to_string(s).unwrap().trim_matches('"').to_string();
    let go_json = json.replace('&', "\\u0026").replace('<', "\\u003c").replace('>', "\\u003e");
    let html = s.replace('&', "&amp;").replace('+', "&#43;").replace('<', "&lt;");
    let basic = format!("deploy-journey:{s}");
    vec![
        form,
        pct,
        json,
        go_json,
        html,
        STANDARD.encode(s),
        URL_SAFE_NO_PAD.encode(s),
        STANDARD.encode(&basic),
        URL_SAFE_NO_PAD.encode(&basic),
    ]
    .into_iter()
    .filter(|e| e.as_str() != s)
    .collect()
}

struct Exporter {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve(dir: &Path, name: &str, sim_url: &str, github_token: &str, password: &str) -> Exporter {
    let port = free_port();
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, config_text(sim_url, &dir.join(format!("{name}.db")), port, "1s ")).unwrap();
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_deploy-journey"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("GITHUB_TOKEN", github_token)
        .env("CONCOURSE_PASSWORD", password)
        .env("GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)
        // Where traces would go: a port nobody listens on, with a credential header.
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", free_port()))
        .env("OTEL_EXPORTER_OTLP_HEADERS", format!("authorization=Bearer {OTLP_HEADER}"))
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn deploy-journey serve");
    Exporter { child, url: format!("http://127.0.0.1:{port}"), log }
}

async fn get_text(url: &str) -> String {
    match client().get(url).header("accept", "application/openmetrics-text").send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("request failed: {e}"),
    }
}

async fn wait_ready(e: &Exporter, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        if let Ok(r) = client().get(format!("{}/readyz", e.url)).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < until, "{} not ready; log:\n{}", e.url, tail(&e.log));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(p: &Path) -> String {
    let t = std::fs::read_to_string(p).unwrap_or_default();
    t.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

fn check_config(config: &Path, github_token: &str, password: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_deploy-journey"))
        .args(["check-config", "--config"])
        .arg(config)
        .env("GITHUB_TOKEN", github_token)
        .env("CONCOURSE_PASSWORD", password)
        .env("GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn fault(json: &str) -> FaultRule {
    FaultRule::parse(json.as_bytes()).unwrap()
}

/// three-while-tests-run.yaml running at 120× on a real port, with a Concourse user and a
/// GitHub token the simulator accepts (and nothing else).
async fn credentialed_sim() -> (Arc<Sim>, String, tokio::task::JoinHandle<()>) {
    init_crypto();
    let sc =
        Scenario::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/three-while-tests-run.yaml")).unwrap();
    let start = deploy_journey::clock::unix_now();
    let (mut world, _) = sc.build_world(start);
    world.concourse.users.insert("deploy-journey".into(), CONCOURSE_PASSWORD.into());
    let sim = Sim::new(world, SimClock::new(start, ClockMode::Running { speed: 120.0 }));
    *sim.github_tokens.write().unwrap() = vec![GITHUB_TOKEN.to_string()];
    let (listener, sim_url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s = sim.clone();
    let task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s, listener).await;
    });
    (sim, sim_url, task)
}

/// `serve` at trace level against a simulator that fails in every way it can (5xx, 401, 403,
/// 429, malformed and truncated bodies, resets, expired tokens), one instance with the right
/// credentials and one with wrong ones, plus `check-config` with both: no secret appears in the
/// logs, `/metrics`, `/`, the JSON API, `check-config`'s output or the state file. And the
/// simulator's request accounting shows nothing but GETs and the token grant went to Concourse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_and_concourse_only_sees_gets_and_the_token_grant() {
    let (sim, sim_url, _sim_task) = credentialed_sim().await;

    let dir = tempfile::tempdir().unwrap();
    let good = spawn_serve(dir.path(), "good", &sim_url, GITHUB_TOKEN, CONCOURSE_PASSWORD);
    let bad = spawn_serve(dir.path(), "bad", &sim_url, WRONG_GITHUB_TOKEN, WRONG_PASSWORD);
    wait_ready(&good, Duration::from_secs(60)).await;

    // Trouble of every kind while both poll.
    for rule in [
        r#"{"kind":"server_error","service":"concourse","status":500,"count":4}"#,
        r#"{"kind":"server_error","service":"concourse","status":401,"count":3}"#,
        r#"{"kind":"server_error","service":"concourse","status":403,"count":2}"#,
        r#"{"kind":"server_error","service":"github","status":401,"count":2}"#,
        r#"{"kind":"server_error","service":"github","status":502,"count":3}"#,
        r#"{"kind":"rate_limit","service":"github","status":403,"retry_after_secs":1,"count":1}"#,
        r#"{"kind":"malformed","service":"any","count":3}"#,
        r#"{"kind":"truncated","service":"any","count":3}"#,
        r#"{"kind":"reset","service":"concourse","count":2}"#,
    ] {
        sim.faults.add(fault(rule));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    client().post(format!("{sim_url}/_sim/expire-tokens")).send().await.unwrap();
    // Webhooks with bad and good signatures, so their handling is in the logs too.
    let body = r#"{"ref":"refs/heads/main"}"#;
    for sig in ["sha256=00", "nonsense", &sign(WEBHOOK_SECRET, body)] {
        let _ = client()
            .post(format!("{}/webhooks/github", good.url))
            .header("x-github-event", "push")
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Every output of both instances.
    let mut outputs: Vec<(String, String)> = vec![];
    for (name, e) in [("good", &good), ("bad", &bad)] {
        for path in ["/metrics", "/", "/api/v1/journeys?state=all&limit=1000", "/readyz", "/healthz"] {
            outputs.push((format!("{name} {path}"), get_text(&format!("{}{path}", e.url)).await));
        }
    }
    let journeys: serde_json::Value = serde_json::from_str(
        &outputs.iter().find(|(n, _)| n == "good /api/v1/journeys?state=all&limit=1000").unwrap().1,
    )
    .unwrap();
    let shas: Vec<String> =
        journeys["journeys"].as_array().unwrap().iter().map(|j| j["sha"].as_str().unwrap().to_string()).collect();
    assert!(!shas.is_empty(), "the good instance followed no commit; log:\n{}", tail(&good.log));
    for sha in &shas {
        outputs.push((format!("good journey {sha}"), get_text(&format!("{}/api/v1/journeys/{sha}", good.url)).await));
    }
    let good_cfg = dir.path().join("good.yaml");
    outputs
        .push(("check-config (right credentials)".into(), check_config(&good_cfg, GITHUB_TOKEN, CONCOURSE_PASSWORD)));
    outputs
        .push(("check-config (wrong credentials)".into(), check_config(&good_cfg, WRONG_GITHUB_TOKEN, WRONG_PASSWORD)));
    // A config that names a secret file that is not there, and one with a literal secret.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&good_cfg)
            .unwrap()
            .replace("password_env: CONCOURSE_PASSWORD", &format!("password: {CONCOURSE_PASSWORD}")),
    )
    .unwrap();
    outputs.push(("check-config (literal secret)".into(), check_config(&broken, GITHUB_TOKEN, CONCOURSE_PASSWORD)));

    drop(good);
    drop(bad);
    for name in ["good", "bad"] {
        let log = std::fs::read(dir.path().join(format!("{name}.log"))).unwrap();
        outputs.push((format!("{name} serve log"), String::from_utf8_lossy(&log).into_owned()));
        // The state file is an output too.
        let db = std::fs::read(dir.path().join(format!("{name}.db"))).unwrap_or_default();
        outputs.push((format!("{name} state file"), String::from_utf8_lossy(&db).into_owned()));
    }

    // The Concourse tokens the simulator issued are secrets as well.
    let issued: Vec<String> = sim.with_world(|w| w.concourse.tokens.keys().cloned().collect());
    assert!(!issued.is_empty(), "no Concourse token was ever granted");
    let mut secrets: Vec<&str> =
        vec![GITHUB_TOKEN, CONCOURSE_PASSWORD, WEBHOOK_SECRET, OTLP_HEADER, WRONG_GITHUB_TOKEN, WRONG_PASSWORD];
    secrets.extend(issued.iter().map(String::as_str));
    let mut found = vec![];
    for (name, text) in &outputs {
        for l in leaks(text, &secrets) {
            found.push(format!("{name}: {l}"));
        }
    }
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));

    // The run did what it was meant to: trace-level logs, the faults and the failed logins.
    let good_log = &outputs.iter().find(|(n, _)| n == "good serve log").unwrap().1;
    let bad_log = &outputs.iter().find(|(n, _)| n == "bad serve log").unwrap().1;
    assert!(good_log.contains("TRACE") && good_log.lines().count() > 200, "not a trace-level log:\n{good_log}");
    assert!(bad_log.contains("WARN"), "the wrong credentials caused no warning:\n{bad_log}");
    let rows = sim.stats.rows();
    let seen = |service: &str, status: u16| rows.iter().any(|r| r.service == service && r.status == status);
    for (service, status) in
        [("concourse", 500), ("concourse", 401), ("concourse", 403), ("github", 401), ("github", 502)]
    {
        assert!(seen(service, status), "no {service} {status} answered: {rows:#?}");
    }
    let metrics = &outputs.iter().find(|(n, _)| n == "good /metrics").unwrap().1;
    assert!(metrics.contains("deploy_journey_source_errors_total"), "{metrics}");

    // Only GETs and the password grant reached Concourse.
    let concourse: Vec<_> = rows.iter().filter(|r| r.service == "concourse").collect();
    let writes: Vec<_> = concourse
        .iter()
        .filter(|r| !(r.method == "GET" || (r.method == "POST" && r.route == "/sky/issuer/token")))
        .collect();
    assert!(writes.is_empty(), "requests to Concourse other than GET and the token grant: {writes:#?}");
    let grants: u64 = concourse.iter().filter(|r| r.method == "POST").map(|r| r.count).sum();
    let gets: u64 = concourse.iter().filter(|r| r.method == "GET").map(|r| r.count).sum();
    // Two instances log in, at least one logs in again after the tokens expire.
    assert!(grants >= 3 && gets > 20, "{grants} token grants, {gets} GETs: {concourse:#?}");
    println!(
        "{} outputs ({} bytes) searched for {} secrets; Concourse saw {gets} GETs and {grants} token grants",
        outputs.len(),
        outputs.iter().map(|(_, t)| t.len()).sum::<usize>(),
        secrets.len()
    );
}

fn sign(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// [`serve_in_process`] without a web config, once `/readyz` says every source answered (the
/// first poll has happened). Returns its base URL and the shutdown sender.
async fn serve_ready(cfg_text: &str, dir: &Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    let (addr, stop) = serve_in_process(cfg_text, dir, None).await;
    let base = format!("http://{addr}");
    let until = Instant::now() + Duration::from_secs(30);
    while client().get(format!("{base}/readyz")).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < until, "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (base, stop)
}

/// In-process `serve` against a stepped simulator, polling only when woken (the interval is an
/// hour). Returns its base URL and the shutdown sender.
async fn serve_in_process(
    cfg_text: &str,
    dir: &Path,
    web_config: Option<PathBuf>,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let path = dir.join("serve.yaml");
    std::fs::write(&path, cfg_text).unwrap();
    let env = |k: &str| match k {
        "GITHUB_TOKEN" => Some(GITHUB_TOKEN.to_string()),
        "CONCOURSE_PASSWORD" => Some("viewer-password".to_string()),
        "GITHUB_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.to_string()),
        _ => None,
    };
    let mut cfg = deploy_journey::config::load(&path, &env).unwrap();
    cfg.web_config_file = web_config;
    let listen = cfg.listen;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let r = deploy_journey::app::serve(
            cfg,
            listen,
            async move {
                let _ = stop_rx.await;
            },
            Some(ready_tx),
        )
        .await;
        if let Err(e) = r {
            panic!("serve failed: {e}");
        }
    });
    let bound = tokio::time::timeout(Duration::from_secs(30), ready_rx).await.unwrap().unwrap();
    (bound, stop_tx)
}

/// A webhook with a missing, malformed or wrong signature (or a body that does not match it) is
/// answered 401 and changes nothing: no poll reaches GitHub or Concourse, no new commit appears.
/// A correctly signed push then does poll at once and brings the commit in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_without_a_valid_signature_get_401_and_trigger_nothing() {
    let sim = spawn_sim("lana", 3).await;
    sim.commit(&["core/src/a.rs"], "feat: first");
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&sim.url, &dir.path().join("s.db"), 0, "1h ");
    let (base, _stop) = serve_ready(&text, dir.path()).await;
    let c = client();
    let journeys = || async {
        let v: serde_json::Value =
            c.get(format!("{base}/api/v1/journeys?state=all")).send().await.unwrap().json().await.unwrap();
        v["journeys"].as_array().unwrap().iter().map(|j| j["sha"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let before = journeys().await;
    assert!(!before.is_empty(), "the first poll brought no commit in");
    let requests = || sim.sim.stats.total("github") + sim.sim.stats.total("concourse");
    // Ready comes with the first cycle's polls; its reads after publishing (the commit's pull
    // request) may still be on their way. Count from when the exporter is quiet.
    let mut polled = requests();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = requests();
        if now == polled || Instant::now() > until {
            break;
        }
        polled = now;
    }
    let new_sha = sim.commit(&["core/src/b.rs"], "feat: second");

    let body = r#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;
    let good = sign(WEBHOOK_SECRET, body);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no signature", None, body),
        ("malformed signature", Some("sha256=not-hex".into()), body),
        ("sha1 signature", Some(format!("sha1={}", &good[7..47])), body),
        ("wrong secret", Some(sign("not-the-secret", body)), body),
        (
            "tampered body",
            Some(good.clone()),
            r#"{"ref":"refs/heads/main","after":"1111111111111111111111111111111111111111"}"#,
        ),
        ("empty signature", Some("sha256=".into()), body),
    ];
    for (what, sig, body) in &cases {
        let mut req = c.post(format!("{base}/webhooks/github")).header("x-github-event", "push").body(body.to_string());
        if let Some(s) = sig {
            req = req.header("x-hub-signature-256", s);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
    }
    // Give a wrongly woken poll time to happen.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(requests(), polled, "a rejected webhook made the exporter poll");
    assert_eq!(journeys().await, before, "a rejected webhook changed the journeys");

    // The control: the same push, correctly signed, polls at once.
    let r = c
        .post(format!("{base}/webhooks/github"))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", &good)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let until = Instant::now() + Duration::from_secs(20);
    while !journeys().await.contains(&new_sha) {
        assert!(Instant::now() < until, "a signed push did not bring the new commit in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(requests() > polled);
}

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_pem: String,
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate signed by it, and
/// a web config next to them (relative paths, as users write them).
fn pki(web_config: &str) -> (Pki, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let named = |sans: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = named(vec![], "deploy-journey test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = named(vec!["localhost".into()], "deploy-journey").signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = named(vec!["prometheus".into()], "prometheus").signed_by(&client_key, &issuer).unwrap();
    std::fs::write(dir.path().join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, web_config).unwrap();
    let client_pem = format!("{}{}", client.pem(), client_key.serialize_pem());
    (Pki { ca_pem: ca.pem(), client_pem, dir }, web)
}

/// A client that trusts only `ca_pem` and reaches `localhost` at `addr`.
fn tls_client(ca_pem: &str, identity: Option<&str>, addr: std::net::SocketAddr) -> reqwest::Client {
    init_crypto();
    let mut b = reqwest::Client::builder()
        .resolve("localhost", addr)
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// TLS with a certificate from the web config and basic auth on every path, as the
/// exporter-toolkit does it: the right user and password get in; a wrong password, an unknown
/// user or no credentials get 401 with `WWW-Authenticate: Basic` (on `/healthz` too); plain HTTP
/// and clients that do not trust the certificate get nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth_guard_every_endpoint() {
    let sim = spawn_sim("lana", 4).await;
    sim.commit(&["core/src/a.rs"], "feat: first");
    let hash = bcrypt::hash("scrape-secret", 4).unwrap();
    let (pki, web) = pki(&format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n\
         http_server_config:\n  headers:\n    X-Frame-Options: deny\n\
         basic_auth_users:\n  prometheus: {hash}\n"
    ));
    let text = config_text(&sim.url, &pki.dir.path().join("s.db"), 0, "1h ");
    let (addr, _stop) = serve_in_process(&text, pki.dir.path(), Some(web)).await;
    let https = format!("https://localhost:{}", addr.port());
    let c = tls_client(&pki.ca_pem, None, addr);

    for path in ["/metrics", "/healthz", "/readyz", "/", "/api/v1/journeys"] {
        let r = c.get(format!("{https}{path}")).basic_auth("prometheus", Some("scrape-secret")).send().await.unwrap();
        assert!(r.status() == 200 || (path == "/readyz" && r.status() == 503), "{path}: {}", r.status());
        assert_eq!(r.headers()["x-frame-options"], "deny", "{path}");
        for (what, user, pass) in [
            ("wrong password", Some("prometheus"), Some("scrape-secreT")),
            ("unknown user", Some("grafana"), Some("scrape-secret")),
            ("no password", Some("prometheus"), None),
            ("no credentials", None, None),
        ] {
            let mut req = c.get(format!("{https}{path}"));
            if let Some(u) = user {
                req = req.basic_auth(u, pass);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with {what}");
            assert_eq!(r.headers()["www-authenticate"], "Basic", "{path} with {what}");
            let body = r.text().await.unwrap();
            assert!(!body.contains("deploy_journey_") && !body.contains("journeys"), "{path} with {what}: {body}");
        }
    }
    let metrics = c
        .get(format!("{https}/metrics"))
        .basic_auth("prometheus", Some("scrape-secret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("deploy_journey_build_info"), "{metrics}");

    // Plain HTTP to the TLS port, and a client that trusts only the system roots.
    let plain =
        client().get(format!("http://{addr}/healthz")).basic_auth("prometheus", Some("scrape-secret")).send().await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true), "plain HTTP was served on the TLS port");
    let untrusting =
        reqwest::Client::builder().resolve("localhost", addr).timeout(Duration::from_secs(10)).build().unwrap();
    let e = untrusting.get(format!("{https}/healthz")).send().await;
    assert!(e.is_err(), "a client that does not trust the certificate got an answer");
}

/// `client_auth_type: RequireAndVerifyClientCert`: a client with a certificate from the
/// configured CA is served; one without a certificate is refused in the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_verified_when_configured() {
    let sim = spawn_sim("lana", 5).await;
    let (pki, web) = pki("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n");
    let text = config_text(&sim.url, &pki.dir.path().join("s.db"), 0, "1h ");
    let (addr, _stop) = serve_in_process(&text, pki.dir.path(), Some(web)).await;
    let url = format!("https://localhost:{}/healthz", addr.port());
    let with = tls_client(&pki.ca_pem, Some(&pki.client_pem), addr).get(&url).send().await.unwrap();
    assert_eq!(with.status(), 200);
    assert_eq!(with.text().await.unwrap(), "ok\n");
    let without = tls_client(&pki.ca_pem, None, addr).get(&url).send().await;
    assert!(without.is_err(), "served a client without a certificate: {:?}", without.map(|r| r.status()));
}

/// A web config that does not validate stops `serve` and fails `check-config` (exit 2), each
/// naming the file and the field.
#[test]
fn bad_web_configs_are_refused_by_serve_and_check_config_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "tls_server_config:\n  cert_file: server.crt\n  key_file: missing.key\n").unwrap();
    std::fs::write(dir.path().join("server.crt"), "not a certificate").unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, config_text("http://127.0.0.1:9", &dir.path().join("s.db"), free_port(), "1s ")).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_deploy-journey"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .arg("--web.config.file")
            .arg(&web)
            .env("GITHUB_TOKEN", GITHUB_TOKEN)
            .env("CONCOURSE_PASSWORD", CONCOURSE_PASSWORD)
            .env("GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let want = format!(
        "web config {}: tls_server_config.key_file: cannot read {}",
        web.display(),
        dir.path().join("missing.key").display()
    );
    let out = run(&["check-config", "--offline"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&want), "{stderr}");
    let out = run(&["serve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&want), "{stderr}");
    assert!(!dir.path().join("s.db").exists(), "serve opened its store despite the bad web config");
}

/// The search above finds a secret whole, cut to an excerpt, or base64-encoded, and nothing else.
#[test]
fn the_leak_search_finds_whole_cut_and_encoded_secrets() {
    use base64::Engine;
    let s = GITHUB_TOKEN;
    assert_eq!(leaks(&format!("Authorization: token {s}"), &[s]).len(), 1);
    assert_eq!(leaks(&format!("body: …{}", &s[5..19]), &[s]).len(), 1);
    let basic = base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(leaks(&format!("Basic {basic}"), &[s]).len(), 1);
    assert!(leaks("Authorization: token ***", &[s, CONCOURSE_PASSWORD]).is_empty());
}

/// The planted credentials are told apart by the search.
#[test]
fn planted_credentials_share_no_piece() {
    let all = [GITHUB_TOKEN, CONCOURSE_PASSWORD, WEBHOOK_SECRET, OTLP_HEADER, WRONG_GITHUB_TOKEN, WRONG_PASSWORD];
    for (i, s) in all.iter().enumerate() {
        let others: Vec<&str> = all.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, o)| *o).collect();
        assert!(leaks(s, &others).is_empty(), "{s} shares a piece with {:?}", leaks(s, &others));
    }
}

// Credentials with characters that change under every encoding.
const ECHO_TOKEN: &str = "ghp_EchoCanary+9f/3@a&b%c1d2e3f4";
const ECHO_PASSWORD: &str = "S3cr3t+p@ss/w+rd&zz%41echo";

/// An upstream that fails every request and echoes it (its `Authorization` header, its body and
/// the rest) in its error answer, in a different encoding first each time: as sent, JSON (Go's
/// escaping), base64 (of the whole request and of `user:password` from the form), URL-encoded
/// and HTML-escaped. Statuses rotate through 500, 401, 200 (not JSON), 502 and 403.
async fn echo_upstream() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = n.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
            let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let rest: String = headers
                    .iter()
                    .filter(|(k, _)| *k != "authorization")
                    .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("")))
                    .collect();
                let raw = format!("authorization: {auth}\nbody: {body}\n{method} {uri}\n{rest}");
                let form: std::collections::HashMap<String, String> =
                    reqwest::Url::parse(&format!("http://x/?{body}")).unwrap().query_pairs().into_owned().collect();
                let basic = match (form.get("username"), form.get("password")) {
                    (Some(u), Some(p)) => format!("upstream auth: Basic {}", STANDARD.encode(format!("{u}:{p}"))),
                    _ => format!("token: {}", STANDARD.encode(auth.trim_start_matches("Bearer "))),
                };
                let json = serde_json::json!({"authorization": auth, "body": body, "uri": uri.to_string()})
                    .to_string()
                    .replace('&', "\\u0026");
                let b64 = format!("request: {}", STANDARD.encode(&raw));
                let pct = {
                    let mut u = reqwest::Url::parse("http://x/").unwrap();
                    u.query_pairs_mut().append_pair("echo", &raw);
                    u.query().unwrap().to_string()
                };
                let html = raw.replace('&', "&amp;").replace('+', "&#43;").replace('<', "&lt;");
                let mut reps = [raw, json, basic, b64, pct, html];
                reps.rotate_left(i % 6);
                let status = [500u16, 401, 200, 502, 403][i % 5];
                (axum::http::StatusCode::from_u16(status).unwrap(), reps.join("\n"))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, n)
}

/// `serve` at trace level against [`echo_upstream`] for both GitHub and Concourse: the echoed
/// token and password appear in no encoding (nor any 12-character piece) in its log, `/metrics`
/// or its pages, though the error excerpts are logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_echoed_by_an_upstream_are_scrubbed_in_every_encoding() {
    init_crypto();
    let (url, answered) = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let e = spawn_serve(dir.path(), "echo", &url, ECHO_TOKEN, ECHO_PASSWORD);
    // Enough cycles (1 s apart, three tries per request) for every encoding to come first.
    let until = Instant::now() + Duration::from_secs(40);
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 60 {
        assert!(Instant::now() < until, "the upstream got few requests; log:\n{}", tail(&e.log));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut outputs: Vec<(String, String)> = vec![];
    for path in ["/metrics", "/", "/api/v1/journeys?state=all", "/readyz"] {
        outputs.push((path.to_string(), get_text(&format!("{}{path}", e.url)).await));
    }
    let log_path = e.log.clone();
    drop(e);
    let log = std::fs::read_to_string(&log_path).unwrap();
    outputs.push(("serve log".into(), log.clone()));
    let mut found = vec![];
    for (name, text) in &outputs {
        for l in leaks(text, &[ECHO_TOKEN, ECHO_PASSWORD]) {
            found.push(format!("{name}: {l}"));
        }
    }
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
    // The echoes did reach the log: excerpts of every status, with the redactions in them.
    for status in ["HTTP 500", "HTTP 401", "HTTP 502"] {
        assert!(log.contains(status), "no {status} excerpt in the log:\n{log}");
    }
    assert!(log.contains("authorization: Bearer ***"), "no echoed header in the log:\n{log}");
    assert!(log.contains("request: ***"), "no echoed base64 in the log:\n{log}");
    // The token grant's echoes (the password as form fields and as `Basic` base64) are not
    // excerpted at all: a token answer is described by its status and size only.
    assert!(log.contains("(a token answer is not shown)"), "no token grant error in the log:\n{log}");
    println!(
        "{} requests echoed; {} log lines searched; {} redactions",
        answered.load(std::sync::atomic::Ordering::Relaxed),
        log.lines().count(),
        log.matches("***").count()
    );
}

/// A captured, correctly signed push replayed as fast as it can be sent for 5 s, while distinct
/// signed pushes arrive too, costs at most one poll cycle per `poll_interval / 6` (here 1 s): a
/// cycle is 2 requests when nothing changed (GitHub's 304 and one Concourse builds list), so at
/// most 2 × (5 + 3) requests (the first push polls at once; one regular cycle). Without
/// coalescing every delivery would poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_flood_stays_within_the_request_budget() {
    let sim = spawn_sim("lana", 3).await;
    sim.commit(&["core/src/a.rs"], "feat: first");
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&sim.url, &dir.path().join("s.db"), 0, "6s ");
    let (base, _stop) = serve_ready(&text, dir.path()).await;
    let c = client();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = || sim.sim.stats.total("github") + sim.sim.stats.total("concourse");
    let before = requests();
    let captured = r#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000001"}"#;
    let captured_sig = sign(WEBHOOK_SECRET, captured);
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let flood = Duration::from_secs(5);
    let mut tasks = vec![];
    for t in 0..8u64 {
        let (c, base, sig, sent) = (c.clone(), base.clone(), captured_sig.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while started.elapsed() < flood {
                k += 1;
                // Half the senders replay the captured delivery; the others send new pushes.
                let (body, sig) = if t % 2 == 0 {
                    (captured.to_string(), sig.clone())
                } else {
                    let b = format!(r#"{{"ref":"refs/heads/main","after":"{t:020}{k:020}"}}"#);
                    let s = sign(WEBHOOK_SECRET, &b);
                    (b, s)
                };
                let r = c
                    .post(format!("{base}/webhooks/github"))
                    .header("x-github-event", "push")
                    .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
                    .header("x-hub-signature-256", sig)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    // A cycle woken at the end finishes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spent = requests() - before;
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let budget = 2 * (took.as_secs() + 3);
    assert!(sent > 500, "only {sent} deliveries sent");
    assert!(spent <= budget, "{sent} deliveries in {took:?} cost {spent} upstream requests (budget {budget})");
    println!("{sent} deliveries in {took:?} cost {spent} upstream requests (budget {budget})");
}

/// The token grant's answer cut in half and damaged halfway (so it fails to decode with the
/// fresh access token and part of the ID token in the text), retried and relogged into, with
/// `RUST_LOG=trace`: no issued token, no piece of an ID token and no password reaches a log
/// line, an error, a metric, a page or the state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_or_damaged_token_answers_leak_no_token() {
    let (sim, sim_url, _sim_task) = credentialed_sim().await;
    let damage = |n: u32| {
        for kind in ["truncated", "corrupted"] {
            sim.faults.add(fault(&format!(
                r#"{{"kind":"{kind}","service":"concourse","path_contains":"/sky/issuer/token","count":{n}}}"#
            )));
        }
    };
    // The first logins fail (retries, then the give-up warning), then one after the tokens expire.
    damage(3);
    let dir = tempfile::tempdir().unwrap();
    let e = spawn_serve(dir.path(), "tok", &sim_url, GITHUB_TOKEN, CONCOURSE_PASSWORD);
    wait_ready(&e, Duration::from_secs(90)).await;
    damage(1);
    client().post(format!("{sim_url}/_sim/expire-tokens")).send().await.unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while !sim.faults.list().is_empty() {
        assert!(Instant::now() < until, "the damaged token answers were not all requested; log:\n{}", tail(&e.log));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut outputs: Vec<(String, String)> = vec![];
    for path in ["/metrics", "/", "/api/v1/journeys?state=all&limit=1000", "/readyz", "/healthz"] {
        outputs.push((path.to_string(), get_text(&format!("{}{path}", e.url)).await));
    }
    drop(e);
    let log = String::from_utf8_lossy(&std::fs::read(dir.path().join("tok.log")).unwrap()).into_owned();
    let db = std::fs::read(dir.path().join("tok.db")).unwrap_or_default();
    outputs.push(("state file".into(), String::from_utf8_lossy(&db).into_owned()));
    outputs.push(("serve log".into(), log.clone()));

    // Every token the simulator minted, the damaged answers' included, is a secret; so is any
    // ID token (a JWT: its header always starts `eyJ`, and the simulator's says RS256).
    let issued: Vec<String> = sim.with_world(|w| w.concourse.tokens.keys().cloned().collect());
    let grants: u64 = sim
        .stats
        .rows()
        .iter()
        .filter(|r| r.service == "concourse" && r.route == "/sky/issuer/token")
        .map(|r| r.count)
        .sum();
    assert!(issued.len() >= 8 && grants >= 8, "{} tokens minted in {grants} grants", issued.len());
    let mut secrets: Vec<&str> = vec![CONCOURSE_PASSWORD, GITHUB_TOKEN];
    secrets.extend(issued.iter().map(String::as_str));
    let mut found = vec![];
    for (name, text) in &outputs {
        for l in leaks(text, &secrets) {
            found.push(format!("{name}: {l}"));
        }
        for jwt in ["eyJhbGciOiJSUzI1NiIs", "eyJhbGci", "id_token\":\"e"] {
            if text.contains(jwt) {
                found.push(format!("{name}: an ID token ({jwt:?})"));
            }
        }
    }
    assert!(found.is_empty(), "tokens leaked:\n{}", found.join("\n"));
    // The damaged answers were met, retried at debug level and given up on at warn level.
    for want in ["token answer of", "cut off (unexpected end)", "not JSON", "concourse: retrying"] {
        assert!(log.contains(want), "the log lacks {want:?}:\n{}", tail(&dir.path().join("tok.log")));
    }
    assert!(log.lines().any(|l| l.contains("WARN") && l.contains("/sky/issuer/token")), "no give-up warning");
}

/// Plain-HTTP `serve` with one basic-auth user (`prometheus`:`scrape-secret`, bcrypt `cost`).
async fn serve_with_basic_auth(
    cost: u32,
) -> (String, tokio::sync::oneshot::Sender<()>, tempfile::TempDir, crate::support::TestSim) {
    let sim = spawn_sim("lana", 6).await;
    sim.commit(&["core/src/a.rs"], "feat: first");
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!("basic_auth_users:\n  prometheus: {}\n", bcrypt::hash("scrape-secret", cost).unwrap()),
    )
    .unwrap();
    let text = config_text(&sim.url, &dir.path().join("s.db"), 0, "1h ");
    let (addr, stop) = serve_in_process(&text, dir.path(), Some(web)).await;
    (format!("http://{addr}"), stop, dir, sim)
}

/// A client whose connections come from `from` (any 127.x address reaches a loopback listener).
fn client_from(from: std::net::Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(from))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// 400 connections, each from its own address, send random wrong passwords as fast as they are
/// answered, far past the 1,024 attempts that used to empty the credential cache, while the real
/// scraper (verified once before the flood) keeps scraping: every one of its scrapes succeeds,
/// each within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_does_not_lock_the_scraper_out() {
    init_crypto();
    let (base, _stop, _dir, _sim) = serve_with_basic_auth(7).await;
    let scraper = client_from(std::net::Ipv4Addr::new(127, 0, 0, 1));
    let scrape = |scraper: reqwest::Client, base: String| async move {
        let t = Instant::now();
        let r = scraper.get(format!("{base}/metrics")).basic_auth("prometheus", Some("scrape-secret")).send().await;
        (r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()), t.elapsed())
    };
    assert_eq!(scrape(scraper.clone(), base.clone()).await.0, Ok(200));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flood = vec![];
    for i in 0..400u32 {
        let c = client_from(std::net::Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8));
        let (base, stop, answered) = (base.clone(), stop.clone(), answered.clone());
        flood.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let pass = format!("wrong-{i}-{n}-{}", rand::random::<u64>());
                if let Ok(r) = c.get(format!("{base}/metrics")).basic_auth("prometheus", Some(pass)).send().await {
                    assert_ne!(r.status(), 200, "a wrong password was let in");
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let mut scrapes = vec![];
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 1500 && started.elapsed() < Duration::from_secs(60) {
        scrapes.push(scrape(scraper.clone(), base.clone()).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let attempts = answered.load(std::sync::atomic::Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    let slowest = scrapes.iter().map(|(_, d)| *d).max().unwrap_or_default();
    println!(
        "{attempts} wrong-password attempts in {:.1} s; {} scrapes, slowest {} ms",
        started.elapsed().as_secs_f64(),
        scrapes.len(),
        slowest.as_millis()
    );
    assert!(attempts >= 1100, "the flood made only {attempts} attempts");
    let bad: Vec<_> = scrapes.iter().filter(|(r, d)| *r != Ok(200) || *d > Duration::from_secs(2)).collect();
    assert!(bad.is_empty(), "{} of {} scrapes failed or took over 2 s: {bad:?}", bad.len(), scrapes.len());
}

/// One address failing over and over: after its budget it gets 429 with `Retry-After`, at once
/// (no bcrypt); other addresses are unaffected. An upper-case `BASIC` scheme is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_client_and_the_scheme_is_case_insensitive() {
    init_crypto();
    let (base, _stop, _dir, _sim) = serve_with_basic_auth(4).await;
    use base64::Engine;
    let creds = base64::engine::general_purpose::STANDARD.encode("prometheus:scrape-secret");
    for scheme in ["BASIC", "basic", "Basic"] {
        let r =
            client().get(format!("{base}/metrics")).header("authorization", format!("{scheme} {creds}")).send().await;
        assert_eq!(r.unwrap().status(), 200, "{scheme}");
    }

    let attacker = client_from(std::net::Ipv4Addr::new(127, 0, 3, 1));
    let mut statuses = vec![];
    for n in 0..60 {
        let r = attacker
            .get(format!("{base}/metrics"))
            .basic_auth("prometheus", Some(format!("wrong-{n}")))
            .send()
            .await
            .unwrap();
        let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        statuses.push((r.status().as_u16(), retry_after));
    }
    let unauthorized = statuses.iter().filter(|(s, _)| *s == 401).count();
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!((25..=40).contains(&unauthorized), "{unauthorized} answered 401: {statuses:?}");
    assert_eq!(unauthorized + limited.len(), statuses.len(), "{statuses:?}");
    assert!(limited.iter().all(|(_, ra)| ra.is_some_and(|s| (1..=60).contains(&s))), "{statuses:?}");
    assert_eq!(statuses.last().unwrap().0, 429, "{statuses:?}");
    // Another client with the right password is unaffected, and so is a wrong one from elsewhere.
    let other = client_from(std::net::Ipv4Addr::new(127, 0, 3, 2));
    let r = other.get(format!("{base}/metrics")).basic_auth("prometheus", Some("nope")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().get(format!("{base}/healthz")).basic_auth("prometheus", Some("scrape-secret")).send().await;
    assert_eq!(r.unwrap().status(), 200);
    // Both kinds of refusal are counted, without the client's address.
    tokio::time::sleep(Duration::from_millis(1100)).await; // a rendering is reused within its second
    let metrics = client()
        .get(format!("{base}/metrics"))
        .basic_auth("prometheus", Some("scrape-secret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |reason: &str| -> u64 {
        let prefix = format!("deploy_journey_basic_auth_rejected_total{{reason=\"{reason}\"}} ");
        let line =
            metrics.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix}:\n{metrics}"));
        line[prefix.len()..].trim().parse().unwrap()
    };
    assert_eq!(value("unauthorized"), unauthorized as u64 + 1, "{statuses:?}");
    assert_eq!(value("rate_limited"), limited.len() as u64);
    assert!(!metrics.contains("127.0.3."), "a client address in the metrics");
}
