//! The README, run as a newcomer would: every fenced block, on a machine with no secrets.
//!
//! Each block is preceded by a marker comment that says how it is checked, and a block without
//! one fails the test (so a new example cannot go unchecked):
//!
//! - `<!-- readme-test: demo -->`: the Quick start. `cargo run --release -- demo` runs as the
//!   binary under test (the same code, without a release build inside the test), with the
//!   default port 9853 taken; the `watch` command the demo prints is run as printed, and must
//!   follow the newest commit to an end. `./scripts/test` is the suite itself, not run here.
//! - `<!-- readme-test: OUTCOME, OUTCOME, ... [-- why] -->`: one outcome per command, in order:
//!   `ok` (exit 0; a `# {...}` line after it is its expected JSON output), `needs-credentials`
//!   (exit 2, each line naming an unset variable, once), `unreachable` (exit 5, one line saying
//!   the host cannot be reached), `long-running` (still serving after 3 s, then stopped), `skip`
//!   (the reason after `--`).
//! - `<!-- readme-test: yaml -->`: the block parses as YAML.
//! - `<!-- readme-test: skip -- why -->`: not run, for the reason given.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::KillOnDrop;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_deploy-journey");

struct Block {
    line: usize,
    /// The fence's indentation (a block inside a list item), taken off every line.
    indent: usize,
    lang: String,
    marker: Option<String>,
    text: String,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = vec![];
    let mut current: Option<Block> = None;
    let mut last_nonempty = String::new();
    for (i, l) in readme.lines().enumerate() {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("```") {
            match current.take() {
                Some(b) => out.push(b),
                None => {
                    let marker = last_nonempty
                        .strip_prefix("<!-- readme-test:")
                        .and_then(|m| m.strip_suffix("-->"))
                        .map(|m| m.trim().to_string());
                    let indent = l.len() - l.trim_start().len();
                    current =
                        Some(Block { line: i + 1, indent, lang: rest.trim().to_string(), marker, text: String::new() });
                }
            }
        } else if let Some(b) = &mut current {
            let cut = l.len().min(b.indent).min(l.len() - l.trim_start().len());
            b.text.push_str(&l[cut..]);
            b.text.push('\n');
        }
        if !t.is_empty() {
            last_nonempty = t.to_string();
        }
    }
    out
}

/// A command and the comment lines right after it.
struct Cmd {
    text: String,
    expect: Option<String>,
}

fn commands(text: &str) -> Vec<Cmd> {
    let mut out: Vec<Cmd> = vec![];
    let mut pending = String::new();
    for l in text.lines() {
        if pending.is_empty() && l.starts_with('#') {
            if let Some(c) = out.last_mut() {
                let e = l.trim_start_matches('#').trim();
                if e.starts_with('{') {
                    c.expect = Some(e.to_string());
                }
            }
            continue;
        }
        if l.is_empty() {
            continue;
        }
        match l.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(l);
                out.push(Cmd { text: std::mem::take(&mut pending), expect: None });
            }
        }
    }
    out
}

/// `sh -c` in the repository, as after a clone: the binary on PATH, no credentials.
fn shell(cmd: &str) -> Command {
    let dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).current_dir(ROOT).env("PATH", path).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k == "GITHUB_TOKEN"
            || k.starts_with("CONCOURSE_")
            || k.starts_with("OTEL_")
            || k.starts_with("DEPLOY_JOURNEY")
        {
            c.env_remove(k);
        }
    }
    c.env_remove("RUST_LOG");
    c
}

fn check_outcome(at: &str, outcome: &str, cmd: &Cmd) -> Result<(), String> {
    let run = || shell(&cmd.text).output().map_err(|e| format!("{at}: {e}"));
    let no_repeats = |stderr: &str| -> Result<(), String> {
        let lines: Vec<&str> = stderr.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if lines[..i].contains(l) {
                return Err(format!("{at}: said twice: {l}"));
            }
        }
        Ok(())
    };
    match outcome {
        "ok" => {
            let out = run()?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                return Err(format!(
                    "{at}: exit {:?}\n{stdout}\n{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            if let Some(e) = &cmd.expect {
                let want: serde_json::Value =
                    serde_json::from_str(e).map_err(|x| format!("{at}: expected {e}: {x}"))?;
                let got: serde_json::Value =
                    serde_json::from_str(stdout.trim()).map_err(|x| format!("{at}: output {stdout}: {x}"))?;
                if want != got {
                    return Err(format!("{at}: printed {got}, the README says {want}"));
                }
            }
            Ok(())
        }
        "needs-credentials" => {
            let out = run()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(2)
                || stderr.lines().count() == 0
                || !stderr.lines().all(|l| l.contains("environment variable") && l.contains("is not set"))
            {
                return Err(format!(
                    "{at}: want exit 2 naming the unset variables, got {:?}:\n{stderr}",
                    out.status.code()
                ));
            }
            no_repeats(&stderr)
        }
        "unreachable" => {
            let out = run()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or_default();
            if out.status.code() != Some(5) || !last.starts_with("error: ") || !last.contains("cannot connect") {
                return Err(format!("{at}: want exit 5, cannot connect; got {:?}:\n{stderr}", out.status.code()));
            }
            no_repeats(&stderr)
        }
        "long-running" => {
            let mut child = KillOnDrop(
                shell(&format!("exec {}", cmd.text)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
            );
            std::thread::sleep(Duration::from_secs(3));
            if let Some(status) = child.0.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
                return Err(format!("{at}: ended within 3 s ({status}):\n{err}"));
            }
            Ok(())
        }
        "skip" => Ok(()),
        other => Err(format!("{at}: unknown outcome {other:?}")),
    }
}

#[test]
fn every_readme_block_runs_as_written_without_secrets() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let all = blocks(&readme);
    assert!(all.len() >= 10, "found only {} blocks", all.len());
    let mut problems = vec![];
    let mut demo_blocks = 0;
    for b in &all {
        let at = format!("README.md:{} (```{})", b.line, b.lang);
        let Some(marker) = &b.marker else {
            problems.push(format!("{at}: no <!-- readme-test: ... --> marker says how it is checked"));
            continue;
        };
        let (spec, why) = match marker.split_once("--") {
            Some((s, w)) => (s.trim(), w.trim()),
            None => (marker.as_str(), ""),
        };
        match spec {
            "demo" => {
                demo_blocks += 1;
                let cmds: Vec<String> = commands(&b.text).into_iter().map(|c| c.text).collect();
                let cmds: Vec<&str> = cmds.iter().map(|c| c.split('#').next().unwrap().trim()).collect();
                if cmds != ["cargo run --release -- demo", "./scripts/test"] {
                    problems.push(format!("{at}: the demo block changed: {cmds:?}"));
                }
            }
            "yaml" => {
                if let Err(e) = serde_norway::from_str::<serde_norway::Value>(&b.text) {
                    problems.push(format!("{at}: not YAML: {e}"));
                }
            }
            "skip" => {
                if why.is_empty() {
                    problems.push(format!("{at}: skip needs a reason after --"));
                }
            }
            list => {
                let outcomes: Vec<&str> = list.split(',').map(str::trim).collect();
                let cmds = commands(&b.text);
                if outcomes.len() != cmds.len() {
                    problems.push(format!("{at}: {} outcomes for {} commands", outcomes.len(), cmds.len()));
                    continue;
                }
                if outcomes.contains(&"skip") && why.is_empty() {
                    problems.push(format!("{at}: skip needs a reason after --"));
                }
                for (o, c) in outcomes.iter().zip(&cmds) {
                    if let Err(e) = check_outcome(&format!("{at} `{}`", c.text), o, c) {
                        problems.push(e);
                    }
                }
            }
        }
    }
    assert_eq!(demo_blocks, 1, "the Quick start's demo block");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The Quick start: `demo` with its default port taken, then the `watch` command it prints, as
/// printed, which follows the newest commit of the demo to an end without credentials.
#[test]
fn the_quick_start_demo_and_its_printed_watch_command() {
    // Take the default port, as another program (or a second demo) would.
    let _taken = std::net::TcpListener::bind("127.0.0.1:9853");
    let state = tempfile::tempdir().unwrap();
    let mut demo = shell("exec deploy-journey demo --state \"$STATE\"");
    demo.env("STATE", state.path()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = demo.spawn().unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let _demo = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    for r in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
    }
    let mut seen = vec![];
    let watch = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|_| panic!("no watch command:\n{}", seen.join("\n")));
        seen.push(l.clone());
        if let Some((_, cmd)) = l.split_once("$ ")
            && cmd.contains(" watch ")
        {
            break cmd.to_string();
        }
    };
    let banner = seen.join("\n");
    assert!(banner.contains("127.0.0.1:9853 is not free"), "{banner}");
    assert!(!banner.contains("landing page:  http://127.0.0.1:9853/"), "{banner}");
    assert!(watch.contains("--from http://127.0.0.1:"), "{watch}");
    // The demo starts at a busy moment: the newest commit is on its way. At 60x the watch ends
    // within a few real minutes.
    let started = Instant::now();
    let out = shell(&watch).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let all = format!("{watch}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- demo\n{banner}");
    assert!(matches!(out.status.code(), Some(0 | 1)), "{all}");
    assert!(stdout.contains("following commit"), "{all}");
    assert!(stdout.contains("simulated clock at 60x real time") || stdout.contains("simulated clock"), "{all}");
    assert!(stdout.contains("deployed to staging") || stdout.contains("FAILED at stage"), "{all}");
    assert!(started.elapsed() < Duration::from_secs(300), "{all}");
}
