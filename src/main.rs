//! The `turnd` binary: parse flags, load the one TOML file, run until SIGINT/SIGTERM
//! (SIGHUP reloads the TLS certificate).

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use turnd::config::{self, Cli};
use turnd::shell::Server;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(config::Command::Credentials(args)) = &cli.command {
        return credentials(&cli, args);
    }
    let cfg = match config::load(&cli.config_args()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("turnd: {e}");
            return ExitCode::from(2);
        }
    };
    // Problems only visible once the config is combined (relay addresses) are checked here
    // too, so `check-config` catches everything start-up would.
    if let Err(e) = turnd::shell::check(&cfg) {
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();

    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    {
        // A stable, parseable line per listener: tests and scripts wait for it.
        let mut out = std::io::stdout().lock();
        for a in server.udp_addrs() {
            let _ = writeln!(out, "turnd listening udp {a}");
            tracing::info!(transport = "udp", addr = %a, "listening");
        }
        for a in server.tcp_addrs() {
            let _ = writeln!(out, "turnd listening tcp {a}");
            tracing::info!(transport = "tcp", addr = %a, "listening");
        }
        for a in server.tls_addrs() {
            let _ = writeln!(out, "turnd listening tls {a}");
            tracing::info!(transport = "tls", addr = %a, "listening");
        }
        let _ = out.flush();
    }
    wait_for_signal(|| {
        server.reload_tls();
    });
    tracing::info!("shutting down");
    server.shutdown();
    ExitCode::SUCCESS
}

/// Blocks until SIGINT or SIGTERM; calls `on_hup` on every SIGHUP (reload).
fn wait_for_signal(on_hup: impl Fn()) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("turnd: cannot wait for signals: {e}");
            return;
        }
    };
    rt.block_on(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            loop {
                tokio::select! {
                    _ = int.recv() => break,
                    _ = term.recv() => break,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading");
                        on_hup();
                    }
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    });
}

/// `turnd credentials`: prints REST API credentials minted with `--secret` (or the first
/// `auth_secrets` entry of the configuration).
fn credentials(cli: &Cli, args: &turnd::credentials::CredentialsArgs) -> ExitCode {
    use turnd::credentials::{ice_servers_json, mint, utc};
    let secret = match &args.secret {
        Some(s) => s.clone(),
        None => match config::load(&cli.config_args()).map(|c| c.auth_secrets.first().cloned()) {
            Ok(Some(s)) => s,
            Ok(None) => {
                eprintln!("turnd: give --secret, or a configuration with auth_secrets");
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("turnd: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let m = mint(&secret, &args.user, args.ttl, unix_now);
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
