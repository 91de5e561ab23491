//! The binary's commands, run as a user would.

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy-journey"));
    c.env("GITHUB_TOKEN", "ghp_cli_test").env("CONCOURSE_PASSWORD", "pw-cli-test").env("RUST_LOG", "warn");
    c
}

const LANA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml");

/// `classify` over the 2178 real lana commits: the resources it names are exactly those for
/// which real `git rev-list` listed the commit and the message carries no skip marker.
#[test]
fn classify_agrees_with_real_git_on_every_real_lana_commit() {
    let data =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/lana-bank-main.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = data.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let input: String = lines
        .iter()
        .map(|l| serde_json::json!({"sha": l["sha"], "message": l["subject"], "files": l["files"]}).to_string() + "\n")
        .collect();
    let mut child =
        bin().args(["classify", "--config", LANA]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    let got: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got.len(), lines.len());
    let mut bad = vec![];
    for (l, g) in lines.iter().zip(&got) {
        assert_eq!(l["sha"], g["sha"]);
        let want: Vec<&str> = ["repo", "admin-panel-src", "customer-portal-src", "dagster-src"]
            .into_iter()
            .filter(|r| l["pathspec_match"][r] == true && l["ci_skip"] == false)
            .collect();
        let have: Vec<&str> = g["resources"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        if want != have {
            bad.push(format!("{}: want {want:?} got {have:?}", l["sha"]));
        }
        let ct = g["change_type"].as_str().unwrap();
        if l["ci_skip"] == true {
            assert_eq!(ct, "skipped", "{}", l["sha"]);
        }
    }
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn classify_names_the_bad_stdin_line() {
    let mut child = bin()
        .args(["classify", "--config", LANA])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{\"sha\":\"a\",\"files\":[\"core/x.rs\"]}\nnot json\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stdin line 2"), "{err}");
}

#[test]
fn check_config_reports_every_problem_with_its_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(LANA)
        .unwrap()
        .replace("stuck_after: 20m", "stuck_after: soon")
        .replace("jobs: [lana-bank-testflight]", "jobs: []");
    std::fs::write(&bad, text).unwrap();
    let out = bin().args(["check-config", "--offline", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stuck_after") && err.contains("\"soon\""), "{err}");
    assert!(err.contains("jobs") && err.contains("empty"), "{err}");
    assert!(err.lines().filter(|l| l.contains("bad.yaml")).count() >= 2, "every problem on its own line: {err}");
}

#[test]
fn check_config_summarises_a_good_file_without_secrets() {
    let out = bin().args(["check-config", "--offline", "--config", LANA]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("testflight") && text.contains("staging"));
    assert!(!text.contains("pw-cli-test") && !text.contains("ghp_cli_test"), "secrets never printed");
}

#[test]
fn credentials_in_a_configured_url_are_refused_and_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("userinfo.yaml");
    let text =
        std::fs::read_to_string(LANA).unwrap().replace("https://ci.galoy.io", "https://bob:hunter2-secret@ci.galoy.io");
    std::fs::write(&bad, text).unwrap();
    let out = bin().args(["check-config", "--offline", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("concourse.url") && err.contains("credentials"), "{err}");
    assert!(!err.contains("hunter2-secret"), "the password must not be echoed: {err}");
}
