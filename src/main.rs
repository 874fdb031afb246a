//! The `turnd` binary: parse flags, load the one TOML file, run until SIGINT/SIGTERM (then
//! drain), reloading credentials, the peer filter, the log level and the TLS certificate on
//! SIGHUP.

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use turnd::config::{self, Cli};
use turnd::shell::Server;

/// Counts live heap bytes for `turnd_heap_bytes` (see `turnd::heap`).
#[global_allocator]
static GLOBAL: turnd::heap::Counting = turnd::heap::Counting;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(config::Command::Credentials(args)) = &cli.command {
        return credentials(&cli, args);
    }
    if let Some(config::Command::Probe(args)) = &cli.command {
        return ExitCode::from(turnd::probe::main(args));
    }
    if let Some(config::Command::Healthcheck(args)) = &cli.command {
        return healthcheck(&cli, args);
    }
    if let Some(code) = turnd::store::cli::main(&cli) {
        return code;
    }
    if let Some(config::Command::Allocations(args)) = &cli.command {
        return allocations(&cli, args);
    }
    let cfg = match config::load(&cli.config_args()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("turnd: {e}");
            return ExitCode::from(2);
        }
    };
    // This process's id in the fleet's store, fixed before anything reads it.
    turnd::store::node::init(cfg.node_id.as_deref());
    // Problems only visible once the config is combined (relay addresses) are checked here
    // too, so `check-config` catches everything start-up would.
    let options = match config::shell_options(&cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("turnd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = turnd::shell::check(&options) {
        eprintln!("turnd: {e:#}");
        return ExitCode::from(2);
    }
    if cli.is_check_config() {
        print!("{}", cfg.to_toml());
        return ExitCode::SUCCESS;
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&cfg.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("turnd: config key `log_level`: {e}");
            return ExitCode::from(2);
        }
    };
    // Colours only on a terminal: `docker logs` and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The filter sits in a reload layer so SIGHUP can change the level without a restart.
    let (filter, log_level) = tracing_subscriber::reload::Layer::new(filter);
    let text = (cfg.log_format == config::LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
    });
    // One JSON object per line, for log shippers; span fields flattened into the event.
    let json = (cfg.log_format == config::LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .init();

    let drain_timeout = Duration::from_secs(cfg.drain_timeout.into());
    let signals = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| Signals::new(&rt).map(|s| (rt, s)))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnd: cannot wait for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The soft limit reached goes into the start-up summary.
    let open_files = match turnd::shell::raise_nofile_limit() {
        Ok((soft, _)) => Some(soft),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot read or raise the open-file limit: each allocation needs a file; \
                 check `ulimit -n` (LimitNOFILE= in systemd, --ulimit nofile= in Docker)"
            );
            None
        }
    };
    // The fleet store, checked before anything starts (docs/cluster.md).
    let store = match turnd::store::Store::from_config(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnd: {e}");
            return ExitCode::from(2);
        }
    };
    // What the running server was started with: a reload compares the new sources against
    // it to name the changed keys that only a restart applies.
    let started_with = cfg.clone();
    let server = match Server::start(options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    startup_summary(&started_with, &server, open_files);
    let (rt, signals) = signals;
    turnd::store::spawn(store, rt.handle(), &server);
    // The fleet's store (docs/cluster.md): what this node reports to it.
    let reporter = match (&started_with.store, server.store_link()) {
        (Some(url), Some(link)) => {
            let client = turnd::store::connect::client(
                url,
                &turnd::store::connect::StoreFiles::of(&started_with),
            );
            match client.and_then(|c| {
                turnd::store::report::spawn(rt.handle(), link, c).map_err(|e| e.to_string())
            }) {
                Ok(r) => {
                    tracing::info!(node = %r.node, "store: this node's id in the fleet");
                    Some(r)
                }
                Err(e) => {
                    tracing::error!(error = %e, "store: not reporting to the fleet");
                    None
                }
            }
        }
        _ => None,
    };
    let reload = || {
        tracing::info!("SIGHUP: reloading");
        // The certificate files named at start-up; a bad one is refused and the old one stays.
        server.reload_tls();
        // The same sources as at start-up: the file, TURND_* variables and the flags.
        match config::load(&cli.config_args()) {
            Ok(new) => {
                match tracing_subscriber::EnvFilter::try_new(&new.log_level) {
                    Ok(f) => {
                        let _ = log_level.reload(f);
                    }
                    Err(e) => tracing::error!(error = %e, "reload: log_level kept"),
                }
                server.reload(&config::access(&new));
                let restart = started_with.changed_needing_restart(&new);
                if !restart.is_empty() {
                    tracing::warn!(
                        keys = %restart.join(", "),
                        "reload: these keys changed but take effect only at the next start; \
                         the running server keeps their old values"
                    );
                }
                tracing::info!(
                    users = new.users.len(),
                    auth_secrets = new.auth_secrets.len(),
                    "configuration reloaded: realm, users, auth_secrets, allow_peers, deny_peers, \
                     log_level (other keys take effect at the next start)"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration stays")
            }
        }
    };
    let outcome = rt.block_on(wait_and_drain(signals, &server, drain_timeout, reload));
    if let Some(r) = &reporter {
        rt.block_on(r.leave(turnd::store::report::LEAVE_TIMEOUT));
    }
    tracing::info!("shutting down");
    server.shutdown();
    match outcome {
        Outcome::Stopped => ExitCode::SUCCESS,
        // The panic policy (docs/architecture.md#panics): a dead worker ends the process.
        Outcome::WorkerDied => ExitCode::from(WORKER_DIED),
    }
}

/// Prints what listens where and what clients are told (stdout, one fact a line, each once:
/// tests and scripts wait for the `turnd listening …` and `turnd metrics …` lines), and logs
/// each warning with what to do about it. See [`turnd::summary`].
fn startup_summary(cfg: &config::Config, server: &Server, open_files: Option<u64>) {
    let facts = turnd::summary::Facts {
        version: env!("CARGO_PKG_VERSION"),
        workers: cfg.effective_workers().max(1),
        realm: cfg.realm.clone(),
        users: cfg.users.len(),
        auth_secrets: cfg.auth_secrets.len(),
        udp: server.udp_addrs(),
        tcp: server.tcp_addrs(),
        tls: server.tls_addrs(),
        metrics: server.metrics_addr(),
        admin_token: cfg.admin_token.is_some(),
        relays: server.relays(),
        relay_ports: (cfg.relay_ports.to_string(), cfg.relay_ports.len() as u64),
        open_files,
        userhash: cfg.userhash,
        own_host: server.own_host(),
    };
    let mut out = std::io::stdout().lock();
    for line in turnd::summary::lines(&facts) {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    for w in turnd::summary::warnings(&facts) {
        tracing::warn!("{w}");
    }
}

/// SIGINT, SIGTERM and SIGHUP, registered before turnd says it is listening, so a signal sent
/// as soon as the listening line appears is never the default (fatal) action.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

/// What a signal asks for.
enum Sig {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP.
    Reload,
}

impl Signals {
    fn new(rt: &tokio::runtime::Runtime) -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let _guard = rt.enter();
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            let _ = rt;
            Ok(Signals {})
        }
    }

    async fn next(&mut self) -> Sig {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => Sig::Stop,
            _ = self.int.recv() => Sig::Stop,
            _ = self.hup.recv() => Sig::Reload,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Sig::Stop
        }
    }
}

/// How often idle cached heap memory is checked for ([`turnd::heap::Trimmer`]).
const TRIM_CHECK: Duration = Duration::from_secs(2);

/// How often the workers are checked for one that died ([`Server::dead_worker`]).
const WORKER_CHECK: Duration = Duration::from_millis(250);

/// The exit status when a worker died: EX_SOFTWARE (an internal error), so a supervisor
/// restarts the server rather than let it run short of a core.
const WORKER_DIED: u8 = 70;

/// How the server's run ended.
enum Outcome {
    /// SIGTERM/SIGINT, drained or not.
    Stopped,
    /// A worker thread ended (it panicked): logged, and the exit status says so.
    WorkerDied,
}

/// Logs a dead worker; true when there is one.
fn worker_died(server: &Server) -> bool {
    match server.dead_worker() {
        Some(index) => {
            tracing::error!(
                worker = index,
                "a worker thread died (a panic: a bug); /readyz is 503 and turnd exits with \
                 status 70 so a supervisor restarts it"
            );
            true
        }
        None => false,
    }
}

/// Reloads on SIGHUP until the first SIGTERM/SIGINT, then drains: `/readyz` turns 503 and new
/// allocations are refused while existing ones keep relaying, until the last one ends,
/// `timeout` passes, or a second signal arrives.
async fn wait_and_drain(
    mut signals: Signals,
    server: &Server,
    timeout: Duration,
    reload: impl Fn(),
) -> Outcome {
    let mut trimmer = turnd::heap::Trimmer::default();
    let mut trim_check = tokio::time::interval(TRIM_CHECK);
    let mut worker_check = tokio::time::interval(WORKER_CHECK);
    // Until the first SIGTERM/SIGINT: reloads, and gives cached memory back after peaks.
    loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Sig::Reload => reload(),
                Sig::Stop => break,
            },
            _ = worker_check.tick() => {
                if worker_died(server) {
                    return Outcome::WorkerDied;
                }
            }
            _ = trim_check.tick() => {
                if let Some((before, after)) = trimmer.tick() {
                    tracing::debug!(
                        rss_before = before,
                        rss_after = after,
                        "gave cached heap memory back to the kernel"
                    );
                }
            }
        }
    }
    tracing::info!(
        allocations = server.allocations(),
        timeout_s = timeout.as_secs(),
        "draining: new allocations refused, existing ones relay until they end or the timeout; \
         a second signal exits at once"
    );
    server.drain();
    let deadline = tokio::time::Instant::now() + timeout;
    // Bounded by the deadline; checks ten times a second.
    while server.allocations() > 0 {
        tokio::select! {
            sig = signals.next() => match sig {
                Sig::Reload => reload(),
                Sig::Stop => {
                    tracing::info!("second signal: exiting at once");
                    return Outcome::Stopped;
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!(allocations = server.allocations(), "drain timeout");
                return Outcome::Stopped;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if worker_died(server) {
                    return Outcome::WorkerDied;
                }
            }
        }
    }
    tracing::info!("drained: no allocation left");
    Outcome::Stopped
}

/// `turnd credentials`: prints REST API credentials minted with `--secret` (or the first
/// `auth_secrets` entry of the configuration).
fn credentials(cli: &Cli, args: &turnd::credentials::CredentialsArgs) -> ExitCode {
    use turnd::credentials::{check_ttl, ice_servers_json, mint, utc};
    // Minted the way the server reads them: its username order, within its `rest_max_ttl`.
    // `--secret` needs no configuration: if none loads, the defaults apply.
    let loaded = config::load(&cli.config_args());
    let secret = match (&args.secret, &loaded) {
        (Some(s), _) => s.clone(),
        (None, Ok(c)) => match c.auth_secrets.first() {
            Some(s) => s.clone(),
            None => {
                eprintln!("turnd: give --secret, or a configuration with auth_secrets");
                return ExitCode::from(2);
            }
        },
        (None, Err(e)) => {
            eprintln!("turnd: {e}");
            return ExitCode::from(2);
        }
    };
    let config = loaded.unwrap_or_else(|e| {
        eprintln!(
            "turnd: warning: the configuration does not load ({e}); minting for the default \
             rest_username_order and rest_max_ttl"
        );
        config::Config::default()
    });
    if let Err(why) = check_ttl(args.ttl, config.rest_max_ttl.into()) {
        eprintln!("turnd: {why}");
        return ExitCode::from(2);
    }
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let m = mint(
        &secret,
        &args.user,
        args.ttl,
        unix_now,
        config.rest_username_order,
    );
    let json = ice_servers_json(&m, &args.host);
    if args.json {
        println!("{json}");
    } else {
        println!("username: {}", m.username);
        println!("password: {}", m.password);
        println!(
            "expires:  {} ({} s from now)",
            utc(m.expires),
            args.ttl.as_secs()
        );
        println!("iceServers: {json}");
    }
    ExitCode::SUCCESS
}

/// `turnd allocations`: the fleet's allocations from `--store` (or the configuration's
/// `store`); 2 when there is no store to ask.
fn allocations(cli: &Cli, args: &turnd::store::fleet::AllocationsArgs) -> ExitCode {
    // The configuration gives the store without --store, and its password file either way.
    let loaded = config::load(&cli.config_args());
    let url = match (&args.store, &loaded) {
        (Some(u), _) => u.clone(),
        (None, Ok(c)) => match &c.store {
            Some(u) => u.clone(),
            None => {
                eprintln!("turnd allocations: give --store URL, or a configuration with store");
                return ExitCode::from(2);
            }
        },
        (None, Err(e)) => {
            eprintln!("turnd: {e}");
            return ExitCode::from(2);
        }
    };
    let files = loaded
        .map(|c| turnd::store::connect::StoreFiles::of(&c))
        .unwrap_or_default();
    match turnd::store::connect::client(&url, &files) {
        Ok(client) => ExitCode::from(turnd::store::fleet::main(args, client)),
        Err(e) => {
            eprintln!("turnd allocations: {e}");
            ExitCode::from(2)
        }
    }
}

/// `turnd healthcheck`: 0 when `/healthz` (on `--url`, else on the configured
/// `metrics_listen`) answers 200, 1 otherwise, 2 when the configuration does not load.
fn healthcheck(cli: &Cli, args: &turnd::healthcheck::HealthcheckArgs) -> ExitCode {
    use turnd::healthcheck::{get_status, healthz_url, parse_url};
    let url = match &args.url {
        Some(u) => u.clone(),
        None => match config::load(&cli.config_args()) {
            Ok(c) => healthz_url(c.metrics_listen),
            Err(e) => {
                eprintln!("turnd: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let target = match parse_url(&url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("turnd healthcheck: {e}");
            return ExitCode::from(2);
        }
    };
    match get_status(&target, args.timeout) {
        Ok(200) => {
            println!("turnd healthcheck: {url}: 200");
            ExitCode::SUCCESS
        }
        Ok(code) => {
            eprintln!("turnd healthcheck: {url}: {code}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("turnd healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
