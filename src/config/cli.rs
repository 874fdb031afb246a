//! The command line: `turnd [FLAGS]` runs the server, `turnd check-config
//! [FLAGS]` validates and prints the effective configuration. Both take the
//! same flags, one per config key: [`ConfigArgs`], which `keys.rs` declares
//! with the keys.

use clap::{Parser, Subcommand};

use super::ConfigArgs;

/// The whole command line: an optional subcommand and the config flags.
/// Use [`Cli::config_args`] rather than `args` directly, so flags written
/// after `check-config` are not missed.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "turnd",
    version,
    about = "turnd: a STUN/TURN relay server (RFC 8489, RFC 8656)",
    long_about = "turnd: a STUN/TURN relay server (RFC 8489, RFC 8656).\n\n\
        Settings come from, lowest precedence first: built-in defaults, the TOML file \
        given by --config, TURND_<KEY> environment variables (lists comma-separated), \
        and flags."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub args: ConfigArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Validate the configuration, print the effective configuration
    /// (secrets redacted), and exit: 0 if valid, non-zero if not.
    CheckConfig(Box<ConfigArgs>),
    /// Mint time-limited TURN REST API credentials and print them with a
    /// ready-to-paste `iceServers` snippet.
    Credentials(crate::credentials::CredentialsArgs),
    /// Probe a TURN server from the client's side: Binding, Allocate,
    /// permissions, channels and data through the relay, each step timed, with
    /// a diagnosis on failure; or RFC 5780 NAT behaviour with --nat-behaviour.
    Probe(Box<crate::probe::ProbeArgs>),
    /// Exit 0 if turnd's /healthz answers 200 (for container HEALTHCHECKs
    /// in images without a shell), 1 otherwise.
    Healthcheck(crate::healthcheck::HealthcheckArgs),
    /// Add, remove or list static users in the fleet store (`store`): every node
    /// sharing it serves them within about a second.
    Users(crate::store::cli::UsersArgs),
    /// Add, remove or list REST shared secrets in the fleet store (`store`).
    Secrets(crate::store::cli::SecretsArgs),
    /// Revoke a user (or REST user id) on every node sharing the store: its
    /// allocations end and it is refused until the revocation ends or is removed.
    Revoke(crate::store::cli::RevokeArgs),
    /// List the allocations of every node sharing the fleet's store, or end a
    /// user's allocations on all of them (--user NAME --end).
    Allocations(crate::store::fleet::AllocationsArgs),
}

impl Cli {
    /// The config flags in force, wherever they were written:
    /// `turnd --config F check-config` and `turnd check-config --config F`
    /// mean the same. Flags after the subcommand win over flags before it.
    pub fn config_args(&self) -> ConfigArgs {
        match &self.command {
            None => self.args.clone(),
            Some(Command::CheckConfig(sub)) => self.args.clone().overridden_by(sub),
            Some(Command::Credentials(_))
            | Some(Command::Probe(_))
            | Some(Command::Healthcheck(_))
            | Some(Command::Users(_))
            | Some(Command::Secrets(_))
            | Some(Command::Revoke(_))
            | Some(Command::Allocations(_)) => self.args.clone(),
        }
    }

    /// Whether the command is `check-config`.
    pub fn is_check_config(&self) -> bool {
        matches!(self.command, Some(Command::CheckConfig(_)))
    }
}
