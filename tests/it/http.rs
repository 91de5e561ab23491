//! The exporter's own HTTP surface: webhook verification and the journeys API errors.

use std::sync::Arc;
use std::time::Duration;

use deploy_journey::http::{Shared, WebhookContext, routes};
use deploy_journey::sources::Secret;
use hmac::Mac;

async fn serve(shared: Arc<Shared>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, routes(shared)).await;
    });
    url
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn woke(shared: &Shared) -> bool {
    tokio::time::timeout(Duration::from_millis(150), shared.poll_now.notified()).await.is_ok()
}

#[tokio::test]
async fn push_webhooks_need_a_valid_signature_and_wake_the_poll_loop() {
    let shared = Arc::new(Shared::default());
    shared.set_webhook(WebhookContext { secret: Secret::new("s3cr3t-hook"), branch: "main".into() });
    let url = serve(shared.clone()).await;
    let c = crate::support::client();
    let body = br#"{"ref":"refs/heads/main","after":"abc"}"#.to_vec();
    let post = |sig: Option<String>, event: &str| {
        let mut r = c.post(format!("{url}/webhooks/github")).header("x-github-event", event).body(body.clone());
        if let Some(s) = sig {
            r = r.header("x-hub-signature-256", s);
        }
        r.send()
    };
    let cases = [
        (None, 401, "missing signature"),
        (Some("sha256=zz".to_string()), 401, "malformed signature"),
        (Some(sign("wrong-secret", &body)), 401, "wrong secret"),
    ];
    for (sig, want, what) in cases {
        let r = post(sig, "push").await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{what}");
        assert!(!woke(&shared).await, "{what}: nothing may be processed");
    }
    let r = post(Some(sign("s3cr3t-hook", &body)), "push").await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(woke(&shared).await, "a verified push to main polls now");
    // A push to another branch is verified but changes nothing.
    let other = br#"{"ref":"refs/heads/feature"}"#.to_vec();
    let r = c
        .post(format!("{url}/webhooks/github"))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", sign("s3cr3t-hook", &other))
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(!woke(&shared).await);
}

#[tokio::test]
async fn webhooks_are_off_without_a_secret_and_bad_journey_queries_say_why() {
    let shared = Arc::new(Shared::default());
    let url = serve(shared).await;
    let c = crate::support::client();
    let r = c.post(format!("{url}/webhooks/github")).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = c.get(format!("{url}/api/v1/journeys/zz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("prefix of at least 4 hex digits"));
    let r = c.get(format!("{url}/api/v1/journeys/abcd")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = c.get(format!("{url}/api/v1/journeys?state=stuck")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = c.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503, "not ready before every source answered");
}

#[tokio::test]
async fn the_landing_page_lists_commits_in_flight_and_escapes_what_it_shows() {
    use deploy_journey::core::journey::{CommitFact, Fact, Facts, derive};
    use deploy_journey::http::Snapshot;
    let cfg = crate::journeys::example_config("lana", "http://127.0.0.1:1");
    let mut facts = Facts::default();
    let now = deploy_journey::clock::unix_now();
    facts.apply(Fact::Commit(CommitFact {
        sha: "1234567890abcdef1234567890abcdef12345678".into(),
        parent: None,
        author: "mallory".into(),
        author_date: now - 600,
        committer_date: now - 600,
        message: "fix: <script>alert(1)</script> & more".into(),
        files: vec!["core/a.rs".into()],
        first_seen: now - 600,
    }));
    let shared = Arc::new(Shared::default());
    shared.publish(Snapshot {
        derived: derive(&facts, &cfg.core(), now),
        now,
        environments: cfg.environments(),
        repository: "GaloyMoney/lana-bank".into(),
        repository_url: String::new(),
        stage_builds: vec![],
        baseline: Default::default(),
    });
    let url = serve(shared).await;
    let r = crate::support::client().get(format!("{url}/")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let page = r.text().await.unwrap();
    assert!(page.contains("<code>1234567</code>"), "{page}");
    assert!(page.contains("fix: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
    assert!(!page.contains("<script>"));
    assert!(page.contains("href=\"/metrics\"") && page.contains("/api/v1/journeys"));
    // The commit should trigger `repo` and no build has taken it for 10 minutes.
    assert!(page.contains(">tests<") && page.contains(">pending<"), "{page}");
}

/// A verified delivery replayed (same `X-GitHub-Delivery`, or the same signed body under a new
/// id, since the id is not signed) is answered 200 and wakes nothing; a new push still does.
#[tokio::test]
async fn replayed_webhook_deliveries_are_answered_but_trigger_nothing() {
    let shared = Arc::new(Shared::default());
    shared.set_webhook(WebhookContext { secret: Secret::new("s3cr3t-hook"), branch: "main".into() });
    let url = serve(shared.clone()).await;
    let c = crate::support::client();
    let push = |body: &'static [u8], delivery: &str| {
        c.post(format!("{url}/webhooks/github"))
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign("s3cr3t-hook", body))
            .body(body)
            .send()
    };
    let first: &[u8] = br#"{"ref":"refs/heads/main","after":"aaa"}"#;
    let r = push(first, "72d3162e-cc78-11e3-81ab-4c9367dc0958").await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(woke(&shared).await, "the first delivery polls");
    for (what, body, delivery) in [
        ("the same delivery again", first, "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("the same body under a new id", first, "00000000-0000-0000-0000-000000000001"),
    ] {
        let r = push(body, delivery).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{what}");
        assert!(r.text().await.unwrap().contains("already handled"), "{what}");
        assert!(!woke(&shared).await, "{what}: a replay must not poll");
    }
    let second: &[u8] = br#"{"ref":"refs/heads/main","after":"bbb"}"#;
    let r = push(second, "72d3162e-cc78-11e3-81ab-4c9367dc0959").await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(woke(&shared).await, "a new push polls");
}

/// GitHub sends `payload=<url-encoded JSON>` when a hook's content type is "form"; the signature
/// covers that raw body.
#[tokio::test]
async fn a_form_encoded_push_webhook_to_main_wakes_the_poll_loop() {
    let shared = Arc::new(Shared::default());
    shared.set_webhook(WebhookContext { secret: Secret::new("s3cr3t-hook"), branch: "main".into() });
    let url = serve(shared.clone()).await;
    let c = crate::support::client();
    let post = |json: &str| {
        let body =
            format!("payload={}", json.replace('%', "%25").replace('"', "%22").replace('/', "%2F").replace(' ', "+"));
        c.post(format!("{url}/webhooks/github"))
            .header("x-github-event", "push")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-hub-signature-256", sign("s3cr3t-hook", body.as_bytes()))
            .body(body)
            .send()
    };
    let r = post(r#"{"ref": "refs/heads/feature"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.text().await.unwrap(), "not the tracked branch; ignored\n");
    assert!(!woke(&shared).await);
    let r = post(r#"{"ref": "refs/heads/main", "after": "abc"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.text().await.unwrap(), "polling now\n");
    assert!(woke(&shared).await, "a verified form-encoded push to main polls now");
}
