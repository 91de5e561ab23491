//! The `deploy-journey` binary: argument parsing and wiring. Errors become exit codes here.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::{LanaWorkload, Scenario};

#[derive(Parser)]
#[command(
    name = "deploy-journey",
    version,
    about = "Follows every commit on main through Concourse to staging; exports Prometheus metrics and OpenTelemetry traces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the simulated Concourse + GitHub alone, serving their real HTTP APIs.
    Simulate(SimulateArgs),
    /// Follow every commit: poll the CI APIs, serve /healthz, /readyz and the JSON API.
    Serve(ServeArgs),
    /// Validate a configuration file; with credentials, compare it with the live pipelines.
    CheckConfig(CheckConfigArgs),
    /// Read JSON lines {"sha","message","files"} on stdin; write which resources fire and the change type.
    Classify(ClassifyArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, short)]
    config: PathBuf,
    /// Overrides the config's `listen`.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// TLS and basic auth for the HTTP endpoints, in the Prometheus exporter-toolkit web-config
    /// format; overrides the config's `web_config_file`.
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CheckConfigArgs {
    #[arg(long, short)]
    config: PathBuf,
    /// Do not contact Concourse to compare resources and jobs with the pipeline configs.
    #[arg(long)]
    offline: bool,
    /// Also validate this web config (TLS, basic auth); default: the config's `web_config_file`.
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ClassifyArgs {
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Address to serve both APIs on (GitHub under /repos, Concourse under /api/v1 and /sky).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Virtual seconds per real second once live (0 = the clock only moves via POST /_sim/advance).
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Simulated history generated at once before going live, e.g. `7d`.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    history: Duration,
    /// A scenario file (YAML) instead of the calibrated random lana workload.
    #[arg(long, conflicts_with = "history")]
    scenario: Option<String>,
    /// A built-in topology (`lana`, `lana-two-repos`) or a topology YAML file.
    #[arg(long, default_value = "lana")]
    topology: String,
    /// Seed of the random workload and of build durations and failures.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// GitHub API tokens to accept, comma-separated (default: accept any token and anonymous).
    #[arg(long, env = "SIM_GITHUB_TOKENS", hide_env_values = true)]
    github_tokens: Option<String>,
}

fn main() -> ExitCode {
    // reqwest is built with rustls and no default crypto provider; install ring once, first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Simulate(a) => simulate(a).await.map(|()| ExitCode::SUCCESS),
            Command::Serve(a) => serve(a).await.map(|()| ExitCode::SUCCESS),
            Command::CheckConfig(a) => check_config(a).await,
            Command::Classify(a) => classify(a).map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

async fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    let now = unix_now();
    let t0 = Instant::now();
    let (mut world, history_secs) = match &a.scenario {
        Some(path) => {
            let sc = Scenario::load(path).with_context(|| format!("loading scenario {path}"))?;
            let (w, _run) = sc.build_world(now);
            (w, 0)
        }
        None => {
            let topo = Topology::load(&a.topology).with_context(|| format!("loading topology {}", a.topology))?;
            let history = a.history.as_secs() as i64;
            let start = now - history;
            let mut w = World::new(topo, start, a.seed);
            // The live part is generated ahead too: 30 simulated days, or more at high speed.
            let ahead = (30 * 86_400).max((a.speed * 86_400.0) as i64);
            for (at, action) in LanaWorkload::new(a.seed).generate(start, now + ahead) {
                w.schedule_action(at, action);
            }
            (w, history)
        }
    };
    world.advance_to(now);
    let took = t0.elapsed().as_secs_f64();
    let builds = world.concourse.builds.len();
    let versions = world.concourse.versions.len();
    let commits = world.tracked_repo().branches.get(&world.topology.tracked_branch).map(|b| b.len()).unwrap_or(0);
    if history_secs > 0 {
        let days = history_secs as f64 / 86_400.0;
        eprintln!(
            "generated {days:.1} simulated days of history in {took:.2} s ({:.0} days/s): {commits} commits, {builds} builds, {versions} resource versions",
            days / took.max(1e-9)
        );
    }
    let mode = if a.speed > 0.0 { ClockMode::Running { speed: a.speed } } else { ClockMode::Stepped };
    let sim = Sim::new(world, SimClock::new(now, mode));
    if let Some(t) = &a.github_tokens {
        // Tokens stay out of logs; only their count is printed.
        let list: Vec<String> = t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        eprintln!("accepting {} GitHub token(s)", list.len());
        *sim.github_tokens.write().unwrap_or_else(|e| e.into_inner()) = list;
    }
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), &a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    println!("simulator listening on {url}");
    println!(
        "  Concourse: {url}/api/v1/info   (team {:?}, token: POST {url}/sky/issuer/token)",
        sim.with_world(|w| w.topology.concourse.team.clone())
    );
    println!("  GitHub:    {url}/repos/{}/commits", sim.with_world(|w| w.topology.tracked_repo.clone()));
    println!("  control:   {url}/_sim/stats  {url}/_sim/clock  {url}/_sim/faults");
    axum::serve(
        listener,
        deploy_journey::sim::server::router(sim).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Exit code for a configuration that does not validate.
const EXIT_BAD_CONFIG: u8 = 2;

fn load_config(path: &std::path::Path) -> Result<deploy_journey::config::Config, ExitCode> {
    deploy_journey::config::load(path, &env_lookup).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let cfg = match load_config(&a.config) {
        Ok(c) => c,
        Err(_) => anyhow::bail!("invalid configuration {}", a.config.display()),
    };
    let listen = a.listen.unwrap_or(cfg.listen);
    let mut cfg = cfg;
    if let Some(w) = a.web_config_file {
        cfg.web_config_file = Some(w);
    }
    deploy_journey::app::serve(cfg, listen, shutdown_signal(), None).await.context("serve")?;
    Ok(())
}

async fn check_config(a: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let cfg = match load_config(&a.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    println!("{}", deploy_journey::config::summary(&cfg));
    if let Some(w) = a.web_config_file.as_ref().or(cfg.web_config_file.as_ref()) {
        match deploy_journey::webconfig::load(w) {
            Ok(web) => println!(
                "web config {}: TLS {}, basic auth {}",
                w.display(),
                if web.tls.is_some() { "on" } else { "off" },
                if web.has_users() { "on" } else { "off" }
            ),
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(EXIT_BAD_CONFIG));
            }
        }
    }
    if a.offline {
        return Ok(ExitCode::SUCCESS);
    }
    // The file wins; differences from the live pipeline configs are shown, not fatal.
    let telemetry = std::sync::Arc::new(deploy_journey::sources::telemetry::SourceTelemetry::new());
    let mut cc = deploy_journey::sources::concourse::ConcourseSource::new(cfg.concourse(), telemetry)
        .context("concourse client")?;
    for p in cfg.pipelines() {
        match cc.pipeline_config(&p).await {
            Ok(answer) => {
                let mut diffs = deploy_journey::config::resource_differences(&cfg, &p, &answer);
                diffs.extend(deploy_journey::config::job_differences(&cfg, &p, &answer));
                if diffs.is_empty() {
                    println!("pipeline {p}: matches the live configuration");
                } else {
                    println!("pipeline {p}: differs from the live configuration (the file wins):");
                    for d in diffs {
                        println!("  - {d}");
                    }
                }
            }
            Err(e) => println!("pipeline {p}: live configuration not compared ({e})"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn classify(a: ClassifyArgs) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct In {
        sha: Option<String>,
        #[serde(default)]
        message: String,
        #[serde(default)]
        files: Vec<String>,
    }
    let cfg = match load_config(&a.config) {
        Ok(c) => c,
        Err(_) => anyhow::bail!("invalid configuration {}", a.config.display()),
    };
    let core = cfg.core();
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let input: In = serde_json::from_str(&line)
            .with_context(|| format!("stdin line {}: not a JSON object {{\"sha\",\"message\",\"files\"}}", n + 1))?;
        let c = core.classifier.classify(&input.message, &input.files);
        let v = serde_json::json!({"sha": input.sha, "resources": c.resources, "change_type": c.change_type.as_str()});
        writeln!(out, "{v}").context("writing stdout")?;
    }
    out.flush().context("writing stdout")?;
    Ok(())
}
