//! The `deploy-journey` binary: argument parsing and wiring. Errors become exit codes here.

use std::process::ExitCode;
use std::time::Duration;

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::workload::Scenario;

#[derive(Parser)]
#[command(
    name = "deploy-journey",
    version,
    about = "Follows every commit on main through Concourse to staging; exports Prometheus metrics and OpenTelemetry traces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: `text` (coloured only on a terminal) or `json` (one object a line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The simulated lana CI and the exporter against it, in one command, with no configuration.
    Demo(DemoArgs),
    /// Run the simulated Concourse + GitHub alone, serving their real HTTP APIs.
    Simulate(SimulateArgs),
    /// Follow every commit: poll the CI APIs, serve /healthz, /readyz and the JSON API.
    Serve(ServeArgs),
    /// Validate a configuration file; with credentials, compare it with the live pipelines.
    CheckConfig(CheckConfigArgs),
    /// Read JSON lines {"sha","message","files"} on stdin; write which resources fire and the change type.
    Classify(ClassifyArgs),
    /// Follow one commit (or PR) to staging from a terminal; print its timeline at the end.
    #[command(after_help = WATCH_EXIT_CODES)]
    Watch(WatchArgs),
    /// Print the timeline of a journey (each stage's wait and duration, the lead time).
    #[command(after_help = REPORT_EXIT_CODES)]
    Report(ReportArgs),
    /// Reconstruct past journeys: timestamped OpenMetrics for promtool, and the store for `serve`.
    Backfill(BackfillArgs),
}

#[derive(clap::Args)]
struct BackfillArgs {
    /// The configuration file (YAML; start from examples/lana.yaml).
    #[arg(long, short)]
    config: PathBuf,
    /// How far back, e.g. `90d`: commits committed and builds started since then.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Duration,
    /// Where to write the OpenMetrics (for `promtool tsdb create-blocks-from openmetrics`).
    #[arg(long)]
    openmetrics: PathBuf,
    /// Time between samples of each series (keep it ≤ Prometheus' lookback, 5m by default).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    step: Duration,
    /// `NAME=VALUE` added to every series, e.g. the `job` and `instance` your scrape attaches.
    #[arg(long = "label", value_name = "NAME=VALUE")]
    labels: Vec<String>,
    /// No progress on stderr (it is shown, with an ETA, on a terminal; as a line every few
    /// seconds otherwise). Warnings and the summary are still printed.
    #[arg(long, short)]
    quiet: bool,
}

const WATCH_EXIT_CODES: &str = "Exit codes:
  0  deployed (or reached the --until stage)
  1  failed: a build carrying the commit failed (the stage, job and log tail are shown)
  2  bad input: arguments, configuration, unknown commit or PR, a stage that does not apply
  3  timed out (--timeout)
  4  --merge: the pull request is not approved or not mergeable; nothing was merged
  5  GitHub, Concourse or the exporter could not be reached";

const REPORT_EXIT_CODES: &str = "Exit codes:
  0  printed
  2  bad input: arguments, configuration, unknown commit
  5  GitHub, Concourse or the exporter could not be reached";

#[derive(clap::Args)]
struct WatchArgs {
    /// A commit sha (or a unique prefix of >= 4 hex digits), a PR number, #N or PR URL;
    /// nothing = the newest commit on the branch.
    target: Option<String>,
    /// The configuration file (YAML; start from examples/lana.yaml).
    #[arg(long, short)]
    config: PathBuf,
    /// With an open PR: squash-merge it if it is approved (else say so and stop), then follow it.
    #[arg(long)]
    merge: bool,
    /// Follow until this stage (or environment) succeeds. Default: the environment; for a
    /// frontend-only commit, its edge images.
    #[arg(long)]
    until: Option<String>,
    /// After a failure, wait for a rerun or a later commit that carries it instead of exiting 1.
    #[arg(long)]
    keep_going: bool,
    /// Time between polls (default: with --from, the exporter's poll interval; else the
    /// config's poll_interval).
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// Give up (exit 3) after this long, e.g. `3h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Print the final timeline as JSON on stdout (the live display goes to stderr).
    #[arg(long)]
    json: bool,
    /// Read journeys from a running exporter's JSON API (e.g. http://deploy-journey:9853)
    /// instead of polling GitHub and Concourse.
    #[arg(long)]
    from: Option<String>,
    /// Log lines shown for a failed build.
    #[arg(long, default_value_t = 12)]
    log_lines: usize,
    /// Testing and demo: take "now" from the simulator's clock (GET URL/_sim/clock).
    #[arg(long, hide = true)]
    sim_clock: Option<String>,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// A commit sha or a unique prefix of >= 4 hex digits.
    sha: String,
    /// The configuration file (YAML; start from examples/lana.yaml).
    #[arg(long, short)]
    config: PathBuf,
    #[arg(long)]
    json: bool,
    /// Read the journey from a running exporter's JSON API instead of polling the CI.
    #[arg(long)]
    from: Option<String>,
    /// Testing and demo: take "now" from the simulator's clock (GET URL/_sim/clock).
    #[arg(long, hide = true)]
    sim_clock: Option<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The configuration file (YAML; start from examples/lana.yaml).
    #[arg(long, short)]
    config: PathBuf,
    /// Overrides the config's `listen`.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The SQLite state file; overrides the config's `state_path`.
    #[arg(long, env = "DEPLOY_JOURNEY_STATE", value_name = "PATH")]
    state: Option<PathBuf>,
    /// TLS and basic auth for the HTTP endpoints, in the Prometheus exporter-toolkit web-config
    /// format; overrides the config's `web_config_file`.
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// Forget everything the state file holds (facts, cursors, counters, its repository and
    /// Concourse) and start afresh: for a state file that belongs to another repository,
    /// branch or Concourse, which `serve` otherwise refuses.
    #[arg(long)]
    reset_state: bool,
    /// Testing: take "now" from the simulator's clock (GET URL/_sim/clock), so a restarted
    /// binary against an accelerated simulator sees simulated time.
    #[arg(long, hide = true)]
    sim_clock: Option<String>,
}

#[derive(clap::Args)]
struct CheckConfigArgs {
    /// The configuration file (YAML; start from examples/lana.yaml).
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
    /// The configuration file (YAML; start from examples/lana.yaml).
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Where the exporter serves its landing page, /metrics and the JSON API
    /// [default: 127.0.0.1:9853, or a free port when that one is taken].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Where the simulated Concourse and GitHub APIs are served (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    sim_listen: std::net::SocketAddr,
    /// Simulated seconds per real second once live.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Simulated history generated at once before going live.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    history: Duration,
    /// Seed of the calibrated lana workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep the exporter's state in this folder after exit (default: a temporary folder removed
    /// at exit). Each demo generates a new world, so the state is started afresh.
    #[arg(long)]
    state: Option<PathBuf>,
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

/// `println!` that ends the process quietly when stdout is closed (`… | head -1`): with the
/// conventional 141 (128 + SIGPIPE) instead of `println!`'s panic. Rust ignores SIGPIPE, and
/// restoring it would also kill the HTTP clients and servers on a closed socket.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            quiet_on_broken_pipe(&e);
        }
    }};
}

deploy_journey::serve_allocator!();

const BROKEN_PIPE_EXIT: i32 = 141;

/// Exit with 141 on a closed stdout; other write errors are left to the caller.
fn quiet_on_broken_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(BROKEN_PIPE_EXIT);
    }
}

fn main() -> ExitCode {
    deploy_journey::memory::limit_arenas();
    // reqwest is built with rustls and no default crypto provider; install ring once, first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Serve(_)) {
        use deploy_journey::memory::{lean_after_start, lean_thread};
        lean_after_start();
        builder.on_thread_start(lean_thread).on_thread_park(lean_thread);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Demo(a) => demo(a).await.map(|()| ExitCode::SUCCESS),
            Command::Simulate(a) => simulate(a).await.map(|()| ExitCode::SUCCESS),
            Command::Serve(a) => serve(a).await,
            Command::CheckConfig(a) => check_config(a).await,
            Command::Classify(a) => classify(a),
            Command::Watch(a) => Ok(watch(a).await),
            Command::Report(a) => Ok(report(a).await),
            Command::Backfill(a) => backfill(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(io) = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()) {
                quiet_on_broken_pipe(io);
            }
            eprintln!("error: {}", error_line(&e));
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // An empty slot for the self-instrumentation layer, which `serve` fills once the config
    // says so (it needs the runtime and the OTLP settings).
    let (self_traces, handle) = tracing_subscriber::reload::Layer::new(None);
    deploy_journey::sinks::traces::register_self_trace_handle(handle);
    // RUST_LOG filters the log lines only; self-instrumentation has its own filter.
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let lines = match format {
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(filter()).boxed()
        }
        // Colour codes only where a terminal renders them, not in a redirected log.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
    };
    tracing_subscriber::registry()
        // Self-instrumentation sees only this crate's own spans (poll cycles and their parts),
        // whatever RUST_LOG says about log lines. The filter wraps the reload slot rather
        // than the layer put in it later: a per-layer filter must exist when the stack is built.
        .with(self_traces.with_filter(
            tracing_subscriber::filter::Targets::new().with_target("deploy_journey", tracing::Level::INFO),
        ))
        .with(lines)
        .init();
}

/// An error and its causes on one line, each said once: a cause whose text the message above
/// it already contains (thiserror's `{0}` beside `#[source]`, a library repeating its inner
/// error) is not repeated.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        // Libraries also repeat themselves within a cause ("unable to open database file"
        // beside "Error code 14: unable to open database file"): parts already said are dropped.
        let text = cause.to_string();
        let new: Vec<&str> = text.split(": ").filter(|part| !part.is_empty() && !line.contains(part)).collect();
        if new.is_empty() {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&new.join(": "));
    }
    line
}

async fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    let now = deploy_journey::clock::unix_now();
    let (world, history) = match &a.scenario {
        Some(path) => {
            let sc = Scenario::load(path).with_context(|| format!("loading scenario {path}"))?;
            let (mut w, _run) = sc.build_world(now);
            w.advance_to(now);
            (w, None)
        }
        None => {
            let (w, figures) = deploy_journey::demo::lana_world(&a.topology, a.seed, a.history, a.speed, now)
                .with_context(|| format!("generating the {} workload", a.topology))?;
            (w, Some(figures))
        }
    };
    if let Some(h) = history {
        print_history(a.history, &h);
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
    say!("simulator listening on {url}");
    say!(
        "  Concourse: {url}/api/v1/info   (team {:?}, token: POST {url}/sky/issuer/token)",
        sim.with_world(|w| w.topology.concourse.team.clone())
    );
    say!("  GitHub:    {url}/repos/{}/commits", sim.with_world(|w| w.topology.tracked_repo.clone()));
    say!("  control:   {url}/_sim/stats  {url}/_sim/clock  {url}/_sim/faults");
    axum::serve(
        listener,
        deploy_journey::sim::server::router(sim).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving")?;
    Ok(())
}

fn print_history(history: Duration, h: &deploy_journey::demo::HistoryFigures) {
    let days = history.as_secs_f64() / 86_400.0;
    let took = h.took.as_secs_f64();
    eprintln!(
        "generated {days:.1} simulated days of history in {took:.2} s ({:.0} days/s): {} commits, {} builds, {} resource versions",
        days / took.max(1e-9),
        h.commits,
        h.builds,
        h.versions
    );
}

async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let opts = deploy_journey::demo::DemoOptions {
        listen: a.listen,
        sim_listen: a.sim_listen,
        speed: a.speed,
        seed: a.seed,
        history: a.history,
        state: a.state.clone(),
    };
    let demo = deploy_journey::demo::start(&opts).await.context("starting the demo")?;
    print_history(a.history, &demo.history);
    if let Some(note) = &demo.listen_note {
        eprintln!("note: {note}");
    }
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let cfg = demo.config.clone();
    let (state, listen) = (cfg.state_path.clone(), cfg.listen);
    // Every demo run serves its world at its own address, so a kept state file is of another one:
    // start it afresh rather than have serve refuse it.
    let options = deploy_journey::app::ServeOptions { reset_state: true };
    let serve = tokio::spawn(deploy_journey::app::serve_with_options(
        cfg,
        listen,
        demo.clock(),
        options,
        shutdown_signal(),
        Some(ready_tx),
    ));
    let hint = || format!("the demo's exporter on {listen} (choose another address with --listen)");
    let bound = match ready_rx.await {
        Ok(addr) => addr,
        // The server ended before listening: its error says why.
        Err(_) => return serve.await.context("exporter task")?.with_context(hint),
    };
    let url = format!("http://{bound}");
    let started = time::OffsetDateTime::from_unix_timestamp(demo.started_at)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!("[weekday repr:short] [year]-[month]-[day] [hour]:[minute] UTC"))
                .ok()
        })
        .unwrap_or_default();
    let head = demo
        .sim
        .with_world(|w| w.repo(&w.topology.tracked_repo).and_then(|r| r.head(&w.topology.tracked_branch).cloned()));
    let me = invocation();
    let config = shell_word(&demo.config_path.display().to_string());
    say!(
        "deploy-journey demo: simulated lana CI at {}x real time, from {started} (seed {}: the same seed, the same history)",
        a.speed,
        a.seed
    );
    say!("  landing page:  {url}/");
    say!("  metrics:       {url}/metrics");
    say!("  journeys API:  {url}/api/v1/journeys");
    say!("  simulated CI:  {} (Concourse /api/v1, GitHub /repos, control /_sim)", demo.sim_url);
    say!("  config:        {}", demo.config_path.display());
    say!("  state:         {}", state.display());
    match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(e) if !e.is_empty() => say!("  traces:        exported over OTLP to {e}"),
        _ => say!("  traces:        off (set OTEL_EXPORTER_OTLP_ENDPOINT to export them)"),
    }
    say!("Try, in another terminal (no credentials needed):");
    say!("  open the landing page:         {url}/");
    say!("  follow the newest commit:      $ {me} watch --from {url} --config {config}");
    if let Some(sha) = head {
        say!("  the timeline of a commit:      $ {me} report {} --from {url} --config {config}", &sha[..10]);
    }
    say!("Ctrl-C stops it.");
    serve.await.context("exporter task")?.with_context(hint)?;
    drop(demo);
    Ok(())
}

/// How to run this binary again from the current folder: a relative path when it is below it
/// (`./target/release/deploy-journey` after `cargo run --release`), else its absolute path.
fn invocation() -> String {
    let Ok(exe) = std::env::current_exe() else { return "deploy-journey".into() };
    let rel = std::env::current_dir().ok().and_then(|d| exe.strip_prefix(d).ok().map(|p| p.to_path_buf()));
    shell_word(&match rel {
        Some(r) => format!("./{}", r.display()),
        None => exe.display().to_string(),
    })
}

/// Quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
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

/// Load and validate a configuration; every problem is printed (once), then exit 2. Missing
/// credentials are not problems here: commands that call an API ask [`need_credentials`].
fn load_config(path: &std::path::Path) -> Result<deploy_journey::config::Config, ExitCode> {
    deploy_journey::config::load_lazy(path, &env_lookup).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

/// For commands that call GitHub or Concourse: each missing credential on its own line, exit 2.
fn need_credentials(cfg: &deploy_journey::config::Config) -> Result<(), ExitCode> {
    cfg.require_credentials().map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

/// The environment variables named in missing-credential messages, for a one-line hint.
/// What would supply each missing credential: the variable to set, or the file to provide.
fn missing_variables(problems: &[deploy_journey::config::Problem]) -> Vec<String> {
    problems
        .iter()
        .filter_map(|p| match p.message.strip_prefix("environment variable ") {
            Some(m) => m.split_whitespace().next().map(|v| format!("set {v}")),
            None => Some(format!("provide the file {}", p.path)),
        })
        .collect()
}

/// A state file `serve` cannot create fails deep inside SQLite ("unable to open database
/// file"); say instead, in one line, what to create or set.
fn check_state_folder(state: &std::path::Path, from_flag: bool) -> Result<(), String> {
    let dir = match state.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let how = if from_flag {
        "--state PATH (or DEPLOY_JOURNEY_STATE)"
    } else {
        "state_path in the config, or --state PATH (or DEPLOY_JOURNEY_STATE)"
    };
    if !dir.is_dir() {
        return Err(format!(
            "state file {}: the folder {} does not exist; create it (mkdir -p {}) or set {how} to a writable place",
            state.display(),
            dir.display(),
            dir.display()
        ));
    }
    // Probe by creating a file: permission bits do not tell (root, ACLs, read-only mounts).
    if let Err(e) = tempfile::Builder::new().prefix(".deploy-journey-probe").tempfile_in(&dir) {
        return Err(format!(
            "state file {}: cannot write in {} ({e}); make it writable or set {how} to a writable place",
            state.display(),
            dir.display()
        ));
    }
    Ok(())
}

async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match load_config(&a.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if let Err(code) = need_credentials(&cfg) {
        return Ok(code);
    }
    let listen = a.listen.unwrap_or(cfg.listen);
    if let Some(w) = a.web_config_file {
        cfg.web_config_file = Some(w);
    }
    let from_flag = a.state.is_some();
    if let Some(s) = a.state {
        cfg.state_path = s;
    }
    if let Err(why) = check_state_folder(&cfg.state_path, from_flag) {
        eprintln!("error: {why}");
        return Ok(ExitCode::from(EXIT_BAD_CONFIG));
    }
    let clock = match &a.sim_clock {
        None => deploy_journey::clock::system(),
        Some(url) => sim_clock(url).await?,
    };
    let options = deploy_journey::app::ServeOptions { reset_state: a.reset_state };
    match deploy_journey::app::serve_with_options(cfg, listen, clock, options, shutdown_signal(), None).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A bad web config is a bad configuration: check-config's message and exit code.
        Err(deploy_journey::app::AppError::WebConfig(e)) => {
            eprintln!("{e}");
            Ok(ExitCode::from(EXIT_BAD_CONFIG))
        }
        Err(e) => Err(anyhow::Error::new(e).context("serve")),
    }
}

/// `serve`'s clock is synchronous; the simulator's is behind HTTP. A task reads it every
/// 100 ms and the clock returns the last reading (never going backwards).
async fn sim_clock(url: &str) -> anyhow::Result<deploy_journey::clock::Clock> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().context("HTTP client")?;
    deploy_journey::clock::Source::simulator(client, url).follow().await.context("--sim-clock")
}

async fn backfill(a: BackfillArgs) -> anyhow::Result<ExitCode> {
    use deploy_journey::backfill::{Options, Progress, run};
    let cfg = match load_config(&a.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if let Err(code) = need_credentials(&cfg) {
        return Ok(code);
    }
    let now = deploy_journey::clock::unix_now();
    let mut opts = Options::new(now.saturating_sub(a.since.as_secs() as i64), now);
    opts.step = a.step.as_secs() as i64;
    for l in &a.labels {
        let (k, v) = l.split_once('=').with_context(|| format!("--label {l:?}: expected NAME=VALUE"))?;
        opts.target_labels.push((k.to_string(), v.to_string()));
    }
    // Written behind: gigabytes that would otherwise fill the page cache (write_behind.rs).
    let mut out = deploy_journey::write_behind::WriteBehind::create(&a.openmetrics)
        .with_context(|| format!("cannot create {}", a.openmetrics.display()))?;
    let progress = if a.quiet { Progress::hidden() } else { Progress::stderr() };
    let report = run(&cfg, &opts, &mut out, &progress)
        .await
        .with_context(|| format!("backfill into {}", a.openmetrics.display()))?;
    out.flush().with_context(|| format!("writing {}", a.openmetrics.display()))?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "backfilled {} commits ({} deployed) and {} builds with {} GitHub and {} Concourse requests in {:.1} s; \
         wrote {} series, {} samples, {:.1} MB to {} in {:.1} s; state in {}",
        report.commits,
        report.deployed,
        report.builds,
        report.github_requests,
        report.concourse_requests,
        report.collect.as_secs_f64(),
        report.series,
        report.samples,
        report.bytes as f64 / 1e6,
        a.openmetrics.display(),
        report.write.as_secs_f64(),
        cfg.state_path.display(),
    );
    eprintln!(
        "load it with: promtool tsdb create-blocks-from openmetrics --max-block-duration=720h {} <prometheus data dir>",
        a.openmetrics.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn check_config(a: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let cfg = match load_config(&a.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    // Everything is validated before the summary says "OK".
    let web = match a.web_config_file.as_ref().or(cfg.web_config_file.as_ref()) {
        None => None,
        Some(w) => match deploy_journey::webconfig::load(w) {
            Ok(web) => Some((w, web)),
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(EXIT_BAD_CONFIG));
            }
        },
    };
    say!("{}", deploy_journey::config::summary(&cfg));
    if let Some((w, web)) = web {
        say!(
            "web config {}: TLS {}, basic auth {}",
            w.display(),
            if web.tls.is_some() { "on" } else { "off" },
            if web.has_users() { "on" } else { "off" }
        );
    }
    if a.offline {
        return Ok(ExitCode::SUCCESS);
    }
    // Reading the pipeline configs needs Concourse's credentials; without them the file is
    // still fully validated, and the comparison is skipped, said in one line.
    let concourse_missing: Vec<_> =
        cfg.missing_secrets.iter().filter(|p| p.path.starts_with("concourse")).cloned().collect();
    if !concourse_missing.is_empty() {
        say!(
            "live comparison with the pipelines skipped: {} to enable it (or pass --offline)",
            missing_variables(&concourse_missing).join(" and ")
        );
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
                    say!("pipeline {p}: matches the live configuration");
                } else {
                    say!("pipeline {p}: differs from the live configuration (the file wins):");
                    for d in diffs {
                        say!("  - {d}");
                    }
                }
            }
            Err(e) => say!("pipeline {p}: live configuration not compared ({e})"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn classify(a: ClassifyArgs) -> anyhow::Result<ExitCode> {
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
        Err(code) => return Ok(code),
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
    Ok(ExitCode::SUCCESS)
}

async fn watch(a: WatchArgs) -> ExitCode {
    use deploy_journey::watch::{display::Display, exit, run};
    let cfg = match load_config(&a.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Standalone, watch polls GitHub and Concourse; with --from it reads the exporter only
    // (a failed build's log and a PR are asked with whatever credentials there are).
    if a.from.is_none()
        && let Err(code) = need_credentials(&cfg)
    {
        return code;
    }
    let opts = run::Options {
        target: a.target,
        merge: a.merge,
        until: a.until,
        keep_going: a.keep_going,
        interval: a.interval,
        timeout: a.timeout,
        from: a.from,
        sim_clock: a.sim_clock,
        log_lines: a.log_lines,
    };
    // With --json, stdout carries only the JSON timeline.
    let mut display = Display::new(a.json);
    let result = run::watch(&cfg, &opts, &mut display).await;
    display.finish();
    if let Err(deploy_journey::watch::WatchError::Output(e)) = &result {
        quiet_on_broken_pipe(e);
    }
    match result {
        Ok(f) => {
            if let Some(t) = f.timeline {
                if a.json {
                    say!("{}", t.json());
                } else {
                    say!("\n{}", t.text());
                }
            }
            ExitCode::from(f.ending.code())
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code().max(exit::FAILED))
        }
    }
}

async fn report(a: ReportArgs) -> ExitCode {
    let cfg = match load_config(&a.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if a.from.is_none()
        && let Err(code) = need_credentials(&cfg)
    {
        return code;
    }
    match deploy_journey::watch::run::report(&cfg, &a.sha, a.from.as_deref(), a.sim_clock.as_deref()).await {
        Ok(t) => {
            if a.json {
                say!("{}", t.json());
            } else {
                print!("{}", t.text());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code().max(deploy_journey::watch::exit::FAILED))
        }
    }
}
