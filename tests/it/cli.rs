//! The binary's commands, run as a user would.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy-journey"));
    c.env("GITHUB_TOKEN", "ghp_cli_test").env("CONCOURSE_PASSWORD", "pw-cli-test").env("RUST_LOG", "warn");
    c
}

const LANA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml");

/// `classify --config examples/lana.yaml` run by `cmd` with `stdin` as its input.
fn classify(mut cmd: Command, stdin: &[u8]) -> std::process::Output {
    let mut child = cmd
        .args(["classify", "--config", LANA])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

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
    let out = classify(bin(), b"{\"sha\":\"a\",\"files\":[\"core/x.rs\"]}\nnot json\n");
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

/// The binary as a newcomer runs it: no GitHub or Concourse credentials in the environment.
fn bin_without_secrets() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy-journey"));
    for k in ["GITHUB_TOKEN", "CONCOURSE_PASSWORD", "CONCOURSE_TOKEN", "DEPLOY_JOURNEY_STATE"] {
        c.env_remove(k);
    }
    c.env("RUST_LOG", "warn");
    c
}

/// No line of `text` appears twice, and no line repeats a cause within itself.
#[track_caller]
fn assert_said_once(text: &str) {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, l) in lines.iter().enumerate() {
        assert!(!lines[..i].contains(l), "said twice: {l:?}\n{text}");
        let parts: Vec<&str> = l.split(": ").filter(|p| p.len() > 12).collect();
        for (j, p) in parts.iter().enumerate() {
            assert!(!parts[..j].contains(p), "a cause repeated in {l:?}");
        }
    }
}

#[test]
fn check_config_without_secrets_validates_and_says_the_live_comparison_was_skipped() {
    let out = bin_without_secrets().args(["check-config", "--config", LANA]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("examples/lana.yaml: OK"), "{stdout}");
    let skipped: Vec<&str> = stdout.lines().filter(|l| l.contains("live comparison")).collect();
    assert_eq!(
        skipped,
        ["live comparison with the pipelines skipped: set CONCOURSE_PASSWORD to enable it (or pass --offline)"]
    );
    // The summary says the credentials are missing rather than calling it anonymous access.
    assert!(stdout.contains("credentials missing: concourse.auth.password_env"), "{stdout}");
    assert!(stderr.trim().is_empty(), "{stderr}");
    // An invalid file is still an error without secrets.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, std::fs::read_to_string(LANA).unwrap().replace("stuck_after: 20m", "stuck_after: soon"))
        .unwrap();
    let out = bin_without_secrets().args(["check-config", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stuck_after") && !stderr.contains("GITHUB_TOKEN"), "{stderr}");
}

#[test]
fn classify_needs_no_secrets() {
    let out = classify(
        bin_without_secrets(),
        b"{\"sha\":\"abc\",\"message\":\"feat: ui\",\"files\":[\"apps/admin-panel/a.tsx\"]}\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"change_type":"frontend","resources":["admin-panel-src"],"sha":"abc"}));
}

#[test]
fn commands_that_call_an_api_name_each_missing_variable_once() {
    for args in [
        vec!["serve"],
        vec!["backfill", "--since", "1d", "--openmetrics", "/dev/null"],
        vec!["watch"],
        vec!["report", "abcd"],
    ] {
        let out = bin_without_secrets().args(&args).args(["--config", LANA]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines,
            [
                format!("{LANA}: repository.token_env: environment variable GITHUB_TOKEN is not set"),
                format!("{LANA}: concourse.auth.password_env: environment variable CONCOURSE_PASSWORD is not set"),
            ],
            "{args:?}"
        );
    }
}

#[test]
fn serve_with_a_missing_state_folder_says_what_to_create_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let state = missing.join("state.db");
    // The example's state_path (/var/lib/deploy-journey) is missing here too; --state wins, and
    // so does DEPLOY_JOURNEY_STATE.
    for via_env in [false, true] {
        let mut c = bin();
        c.args(["serve", "--config", LANA, "--listen", "127.0.0.1:0"]);
        if via_env {
            c.env("DEPLOY_JOURNEY_STATE", &state);
        } else {
            c.arg("--state").arg(&state);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(&format!("the folder {} does not exist", missing.display())), "{stderr}");
        assert!(lines[0].contains(&format!("mkdir -p {}", missing.display())), "{stderr}");
        assert!(lines[0].contains("--state PATH"), "{stderr}");
    }
    // A state file SQLite cannot open (here a folder): one line, each cause once.
    let odd = dir.path().join("odd.db");
    std::fs::create_dir(&odd).unwrap();
    let out = bin().args(["serve", "--config", LANA, "--listen", "127.0.0.1:0", "--state"]).arg(&odd).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let err: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(err.len(), 1, "{stderr}");
    assert_eq!(err[0].matches("unable to open database file").count(), 1, "{stderr}");
    assert!(err[0].contains(odd.to_str().unwrap()), "{stderr}");
    // Once the folder exists, the state file is created there.
    std::fs::create_dir(&missing).unwrap();
    let mut child = bin()
        .args(["serve", "--config", LANA, "--listen", "127.0.0.1:0", "--state"])
        .arg(&state)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !state.exists() && t0.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(state.exists(), "serve --state did not create {}", state.display());
}

#[test]
fn report_from_a_dead_exporter_says_what_failed_once() {
    let port = crate::support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = bin_without_secrets().args(["report", "abcd", "--from", &url, "--config", LANA]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("exporter {url}/api/v1/status: cannot connect")), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert_said_once(&stderr);
}

/// Log lines: plain text (no colour codes) when stderr is not a terminal; one JSON object a
/// line with --log-format json.
#[test]
fn logs_are_plain_off_a_terminal_and_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    // Both APIs on a closed port: serve logs its failed polls.
    let cfg = dir.path().join("c.yaml");
    let text = std::fs::read_to_string(LANA)
        .unwrap()
        .replace("https://api.github.com", &format!("http://127.0.0.1:{port}"))
        .replace("https://ci.galoy.io", &format!("http://127.0.0.1:{port}"));
    std::fs::write(&cfg, text).unwrap();
    for json in [false, true] {
        let mut c = bin();
        c.env("RUST_LOG", "info").args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&cfg);
        c.arg("--state").arg(dir.path().join(format!("s{json}.db")));
        if json {
            c.args(["--log-format", "json"]);
        }
        let child = c.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_secs(3));
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.lines().count() >= 2, "{stderr}");
        assert!(!stderr.contains('\x1b'), "colour codes in a redirected log:\n{stderr}");
        for l in stderr.lines() {
            let parsed = serde_json::from_str::<serde_json::Value>(l);
            if json {
                let v = parsed.unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
                assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
            } else {
                assert!(parsed.is_err(), "JSON without --log-format json: {l}");
            }
        }
    }
}

#[test]
fn every_config_flag_has_help() {
    for cmd in ["serve", "check-config", "classify", "watch", "report", "backfill"] {
        let out = bin().args([cmd, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let line = help.lines().find(|l| l.contains("--config <CONFIG>")).unwrap_or_else(|| panic!("{cmd}: {help}"));
        assert!(line.contains("configuration file") || help.contains("The configuration file"), "{cmd}: {line}");
    }
}

/// `demo --listen` on a taken port: one line, the cause once, and the flag that fixes it.
#[test]
fn demo_on_a_taken_port_says_so_once_with_the_flag_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = bin_without_secrets().args(["demo", "--history", "1h", "--listen", &addr]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let err: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(err.len(), 1, "{stderr}");
    assert!(err[0].contains(&addr) && err[0].contains("--listen"), "{stderr}");
    assert_eq!(err[0].matches("in use").count(), 1, "{stderr}");
    assert_said_once(&stderr);
}

/// `check-config --offline` needs no credentials at all: none in the environment, and secret
/// files that do not exist here (they are mounted where the exporter runs). Two problems in two
/// sections are reported together, each with its path, exit 2.
#[test]
fn check_config_offline_needs_no_credentials_and_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let lana = std::fs::read_to_string(LANA).unwrap();
    let files = dir.path().join("files.yaml");
    let text = lana
        .replace("token_env: GITHUB_TOKEN", "token_file: /nonexistent/deploy-journey/gh-token")
        .replace("password_env: CONCOURSE_PASSWORD", "password_file: /nonexistent/deploy-journey/cc-pass");
    assert_ne!(text, lana);
    std::fs::write(&files, text).unwrap();
    for cfg in [Path::new(LANA), files.as_path()] {
        let out = bin_without_secrets().args(["check-config", "--offline", "--config"]).arg(cfg).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{}: {stdout}\n{stderr}", cfg.display());
        assert!(stdout.lines().next().is_some_and(|l| l.ends_with(": OK")), "{stdout}");
        assert!(!stdout.contains("live comparison"), "offline: nothing to skip: {stdout}");
    }
    // Without --offline the comparison is skipped, naming the file that would enable it.
    let out = bin_without_secrets().args(["check-config", "--config"]).arg(&files).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("live comparison with the pipelines skipped: provide the file concourse.auth.password_file"),
        "{stdout}"
    );

    let two = dir.path().join("two.yaml");
    std::fs::write(
        &two,
        lana.replacen("token_env: GITHUB_TOKEN", "tokn: GITHUB_TOKEN", 1).replacen(
            "url: https://ci.galoy.io",
            "url: ftp://x",
            1,
        ),
    )
    .unwrap();
    let out = bin_without_secrets().args(["check-config", "--offline", "--config"]).arg(&two).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("two.yaml: ")).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("repository: unknown field `tokn`") && lines[0].contains("(line "), "{stderr}");
    assert!(lines[1].contains("concourse.url: \"ftp://x\" is not an http(s) URL"), "{stderr}");
}

/// `… | head -1`: a command whose stdout is closed ends quietly with 141 (128 + SIGPIPE), not a
/// panic (101) or an error (1).
#[test]
fn a_closed_stdout_ends_a_printing_command_quietly() {
    let run = |cmd: &mut Command, stdin: &[u8]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // the reader is gone before the first line is written
        let mut child = cmd.stdin(Stdio::piped()).stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
        drop(input);
        child.wait_with_output().unwrap()
    };
    let lines = b"{\"sha\":\"a\",\"message\":\"feat: x\",\"files\":[\"core/x.rs\"]}\n".repeat(2000);
    for (name, out) in [
        ("check-config", run(bin().args(["check-config", "--offline", "--config", LANA]), b"")),
        ("classify", run(bin().args(["classify", "--config", LANA]), &lines)),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{name}: {:?}\n{stderr}", out.status);
        assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{name}: {stderr}");
    }
}

/// Every command that loads a configuration refuses an invalid one the same way: exit 2 and the
/// message check-config prints, whether the main file or the web config file (named by the flag
/// or by the config) is wrong. `serve` said `error: serve: …` and exited 1 for the web config.
#[test]
fn an_invalid_config_exits_2_with_check_configs_message_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users: {admin: not-a-hash}\n").unwrap();
    let lana = std::fs::read_to_string(LANA).unwrap();
    let with_web = dir.path().join("with-web.yaml");
    std::fs::write(&with_web, format!("{lana}\nweb_config_file: {}\n", web.display())).unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, lana.replacen("url: https://ci.galoy.io", "url: ftp://x", 1)).unwrap();
    let run = |args: &[&str], config: &Path, extra: &[&Path]| {
        let out = bin().args(args).arg("--config").arg(config).args(extra).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let check = |config: &Path, extra: &[&Path]| run(&["check-config", "--offline"], config, extra);
    let state = state.to_str().unwrap();
    let serve_with =
        |config: &Path, extra: &[&Path]| run(&["serve", "--listen", "127.0.0.1:0", "--state", state], config, extra);
    // The web config named by the flag, then by the config file.
    let flag = ["--web.config.file".as_ref(), web.as_path()];
    for (name, want, got) in [
        ("flag", check(Path::new(LANA), &flag), serve_with(Path::new(LANA), &flag)),
        ("config key", check(&with_web, &[]), serve_with(&with_web, &[])),
    ] {
        assert_eq!(want.0, Some(2), "{name}: {}", want.1);
        assert!(want.1.contains("basic_auth_users.admin"), "{name}: {}", want.1);
        assert_eq!(got, want, "{name}: serve differs from check-config");
    }
    // The main file, in every command that reads one.
    let want = check(&bad, &[]);
    assert_eq!(want.0, Some(2), "{}", want.1);
    assert!(want.1.contains("concourse.url"), "{}", want.1);
    for args in [
        &["classify"][..],
        &["watch"],
        &["report", "abcd"],
        &["backfill", "--since", "1d", "--openmetrics", "/dev/null"],
    ] {
        assert_eq!(run(args, &bad, &[]), want, "{args:?}");
    }
    assert_eq!(serve_with(&bad, &[]), want, "serve");
}
