//! `turnd users|secrets|revoke`: manage the fleet store's users, REST secrets and revocations
//! from the command line (`docs/cluster.md#how-to-run`). Each write is one atomic round
//! trip that also tells every node, through `turnd:changes`, to re-read that part now.
//!
//! The store is `--store URL` or, without it, the configuration's `store` (the file, `TURND_*`
//! variables, flags), with its password from `store_password_file` or `TURND_STORE_PASSWORD`.
//! Exit status: 0 done, 1 the store refused or is unreachable (or the name was not there),
//! 2 a usage or configuration error.

use super::write;
use crate::config::{self, Cli, Command};
use crate::core::auth::UserSecret;
use crate::core::revocation::FOREVER;
use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

/// How long a command waits for the store before giving up.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub action: UsersAction,
    /// The store: redis://HOST:PORT/DB or rediss://… (default: the configuration's `store`)
    #[arg(long, value_name = "URL", global = true)]
    pub store: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum UsersAction {
    /// Add a user, or replace its password or key; the keys, MD5(name:realm:password) and
    /// SHA-256(name:realm:password), are what is stored
    Add {
        name: String,
        /// The password (stored as its MD5 and SHA-256 keys for the realm)
        #[arg(
            long,
            value_name = "P",
            required_unless_present = "key",
            conflicts_with = "key"
        )]
        password: Option<String>,
        /// The key as 32 hex digits, as `turnadmin -k` prints it (MD5 only, unless
        /// --sha256-key is given too)
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
        /// With --key: the SHA-256 key, SHA-256(name:realm:password), as 64 hex digits, so the
        /// user can use RFC 8489's SHA-256 password algorithm as well
        #[arg(long, value_name = "HEX", requires = "key")]
        sha256_key: Option<String>,
        /// The realm the key is computed for (default: the configuration's `realm`)
        #[arg(long, value_name = "REALM")]
        realm: Option<String>,
    },
    /// Remove a user
    Remove { name: String },
    /// List the users' names
    List,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub action: SecretsAction,
    /// The store: redis://HOST:PORT/DB or rediss://… (default: the configuration's `store`)
    #[arg(long, value_name = "URL", global = true)]
    pub store: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SecretsAction {
    /// Add a REST shared secret under a name (the name is what list and remove show)
    Add {
        name: String,
        /// The secret; without it, the first line of standard input
        #[arg(long, value_name = "S")]
        secret: Option<String>,
    },
    /// Remove a secret by name
    Remove { name: String },
    /// List the secrets' names (never the secrets)
    List,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RevokeArgs {
    /// The static user name, or the user id of REST usernames
    #[arg(long, value_name = "NAME", required_unless_present = "list")]
    pub user: Option<String>,
    /// Revoke for this long only: 90s, 30m, 24h, 7d (default: until removed)
    #[arg(long = "for", value_name = "DURATION", value_parser = crate::credentials::parse_ttl,
          conflicts_with = "remove")]
    pub duration: Option<Duration>,
    /// End the user's revocation instead
    #[arg(long)]
    pub remove: bool,
    /// List the revocations in force
    #[arg(long, conflicts_with_all = ["user", "remove", "duration"])]
    pub list: bool,
    /// The store: redis://HOST:PORT/DB or rediss://… (default: the configuration's `store`)
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

/// Runs `turnd users|secrets|revoke`; `None` for any other command.
pub fn main(cli: &Cli) -> Option<ExitCode> {
    let (store, job): (&Option<String>, Job) = match &cli.command {
        Some(Command::Users(a)) => (&a.store, Job::Users(a.action.clone())),
        Some(Command::Secrets(a)) => (&a.store, Job::Secrets(a.action.clone())),
        Some(Command::Revoke(a)) => (&a.store, Job::Revoke(a.clone())),
        _ => return None,
    };
    Some(match run(cli, store.as_deref(), job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("turnd: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Store(e)) => {
            eprintln!("turnd: {e}");
            ExitCode::FAILURE
        }
    })
}

enum Job {
    Users(UsersAction),
    Secrets(SecretsAction),
    Revoke(RevokeArgs),
}

enum Failure {
    Usage(String),
    Store(String),
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn run(cli: &Cli, store: Option<&str>, job: Job) -> Result<(), Failure> {
    // The configuration is needed for the store (without --store), its password file, and
    // the realm (users add --password without --realm).
    let loaded = config::load(&cli.config_args());
    let url = match (store, &loaded) {
        (Some(u), _) => {
            config::parse_store_url(u).map_err(Failure::Usage)?;
            u.to_string()
        }
        (None, Ok(c)) => c.store.clone().ok_or_else(|| {
            Failure::Usage("give --store URL, or a configuration with `store`".into())
        })?,
        (None, Err(e)) => return Err(Failure::Usage(e.to_string())),
    };
    let files = loaded
        .as_ref()
        .map(super::connect::StoreFiles::of)
        .unwrap_or_default();
    let job = prepare(job, &loaded)?;
    let client = super::connect::client(&url, &files).map_err(Failure::Usage)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Store(format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        let work = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            execute(&mut conn, job).await
        };
        match tokio::time::timeout(STORE_TIMEOUT, work).await {
            Ok(Ok(r)) => r,
            // A redis-rs error names the failure, never the URL (which may hold a password).
            Ok(Err(e)) => Err(Failure::Store(format!("the store: {e}"))),
            Err(_) => Err(Failure::Store(format!(
                "the store did not answer within {} s",
                STORE_TIMEOUT.as_secs()
            ))),
        }
    })
}

/// A job with everything it needs from outside the store resolved: the user's stored value,
/// the secret read from standard input, the revocation's end.
enum Ready {
    AddUser(String, String),
    RemoveUser(String),
    ListUsers,
    AddSecret(String, String),
    RemoveSecret(String),
    ListSecrets,
    Revoke(String, u64),
    Unrevoke(String),
    ListRevoked,
}

/// A `turnd:users` value for these keys: `key:<md5 hex>`, or `key:<md5 hex>;sha256:<hex>`
/// when the SHA-256 key is known (`src/store/users.rs` reads both).
fn store_value(md5: &[u8; 16], sha256: Option<&[u8; 32]>) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match sha256 {
        Some(sha) => format!("key:{};sha256:{}", hex(md5), hex(sha)),
        None => format!("key:{}", hex(md5)),
    }
}

fn prepare(
    job: Job,
    loaded: &Result<config::Config, config::ConfigError>,
) -> Result<Ready, Failure> {
    let name_ok = |n: &str| super::revoked::check_name(n).map_err(Failure::Usage);
    Ok(match job {
        Job::Users(UsersAction::Add {
            name,
            password,
            key,
            sha256_key,
            realm,
        }) => {
            name_ok(&name)?;
            let value = match (password, key) {
                (_, Some(hex)) => {
                    let md5 = UserSecret::parse_key_hex(&hex).ok_or_else(|| {
                        Failure::Usage(
                            "--key takes 32 hex digits (MD5(name:realm:password))".into(),
                        )
                    })?;
                    let sha256 = match sha256_key {
                        Some(hex) => {
                            Some(UserSecret::parse_sha256_key_hex(&hex).ok_or_else(|| {
                                Failure::Usage(
                                    "--sha256-key takes 64 hex digits \
                                     (SHA-256(name:realm:password))"
                                        .into(),
                                )
                            })?)
                        }
                        None => None,
                    };
                    store_value(&md5, sha256.as_ref())
                }
                (Some(p), None) => {
                    let realm = match (realm, loaded) {
                        (Some(r), _) => r,
                        (None, Ok(c)) => c.realm.clone(),
                        (None, Err(e)) => {
                            return Err(Failure::Usage(format!(
                                "give --realm, or a configuration that loads ({e})"
                            )))
                        }
                    };
                    let md5 = crate::core::auth::long_term_key(&name, &realm, &p);
                    let sha256 = crate::core::auth::long_term_key_sha256(&name, &realm, &p);
                    store_value(&md5, Some(&sha256))
                }
                (None, None) => return Err(Failure::Usage("give --password or --key".into())),
            };
            Ready::AddUser(name, value)
        }
        Job::Users(UsersAction::Remove { name }) => Ready::RemoveUser(name),
        Job::Users(UsersAction::List) => Ready::ListUsers,
        Job::Secrets(SecretsAction::Add { name, secret }) => {
            name_ok(&name)?;
            let secret = match secret {
                Some(s) => s,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .map_err(|e| Failure::Usage(format!("reading the secret: {e}")))?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if super::secrets::parse_secret(name.as_bytes(), secret.as_bytes()).is_none() {
                return Err(Failure::Usage(format!(
                    "a secret is 1 to {} bytes",
                    super::secrets::MAX_SECRET_BYTES
                )));
            }
            Ready::AddSecret(name, secret)
        }
        Job::Secrets(SecretsAction::Remove { name }) => Ready::RemoveSecret(name),
        Job::Secrets(SecretsAction::List) => Ready::ListSecrets,
        Job::Revoke(a) if a.list => Ready::ListRevoked,
        Job::Revoke(a) => {
            // Invariant: clap requires --user unless --list.
            let user = a.user.unwrap_or_default();
            name_ok(&user)?;
            if a.remove {
                Ready::Unrevoke(user)
            } else {
                let until = a
                    .duration
                    .map_or(FOREVER, |d| unix_now().saturating_add(d.as_secs()));
                Ready::Revoke(user, until)
            }
        }
    })
}

async fn execute(
    conn: &mut redis::aio::MultiplexedConnection,
    job: Ready,
) -> redis::RedisResult<Result<(), Failure>> {
    let missing = |what: &str, name: &str| Err(Failure::Store(format!("no {what} `{name}`")));
    Ok(match job {
        Ready::AddUser(name, value) => {
            write::add_user(conn, &name, &value).await?;
            println!("user `{name}` stored");
            Ok(())
        }
        Ready::RemoveUser(name) => match write::remove_user(conn, &name).await? {
            true => {
                println!("user `{name}` removed");
                Ok(())
            }
            false => missing("user", &name),
        },
        Ready::ListUsers => {
            for n in write::list_users(conn).await? {
                println!("{n}");
            }
            Ok(())
        }
        Ready::AddSecret(name, secret) => {
            write::add_secret(conn, &name, &secret).await?;
            println!("secret `{name}` stored");
            Ok(())
        }
        Ready::RemoveSecret(name) => match write::remove_secret(conn, &name).await? {
            true => {
                println!("secret `{name}` removed");
                Ok(())
            }
            false => missing("secret", &name),
        },
        Ready::ListSecrets => {
            for n in write::list_secrets(conn).await? {
                println!("{n}");
            }
            Ok(())
        }
        Ready::Revoke(user, until) => {
            write::revoke(conn, &user, until, unix_now()).await?;
            match until {
                FOREVER => println!("`{user}` revoked until removed"),
                t => println!("`{user}` revoked until {}", crate::credentials::utc(t)),
            }
            Ok(())
        }
        Ready::Unrevoke(user) => match write::unrevoke(conn, &user).await? {
            true => {
                println!("revocation of `{user}` removed");
                Ok(())
            }
            false => missing("revocation of", &user),
        },
        Ready::ListRevoked => {
            for (user, until) in write::list_revoked(conn, unix_now()).await? {
                match until {
                    FOREVER => println!("{user}\tuntil removed"),
                    t => println!("{user}\t{}", crate::credentials::utc(t)),
                }
            }
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::{
        long_term_key, long_term_key_sha256, Credentials, PasswordAlgorithm, UserRef,
    };

    fn stored(add: UsersAction) -> Result<String, String> {
        let loaded = config::load_from(&Default::default(), &Default::default());
        match prepare(Job::Users(add), &loaded) {
            Ok(Ready::AddUser(_, value)) => Ok(value),
            Ok(_) => Err("not an AddUser".into()),
            Err(Failure::Usage(e) | Failure::Store(e)) => Err(e),
        }
    }

    fn add(password: Option<&str>, key: Option<String>, sha256_key: Option<String>) -> UsersAction {
        UsersAction::Add {
            name: "alice".into(),
            password: password.map(Into::into),
            key,
            sha256_key,
            realm: Some("example.org".into()),
        }
    }

    /// What `users add --password` writes lets the user authenticate with either algorithm,
    /// and the store holds no plaintext.
    #[test]
    fn a_user_added_with_a_password_can_use_sha256() {
        let value = stored(add(Some("s3cret"), None, None)).unwrap();
        assert!(!value.contains("s3cret"), "{value}");
        let user = super::super::users::parse_user(b"alice", value.as_bytes()).unwrap();
        let creds = Credentials::new("example.org", [(user.name, user.secret)], []);
        let sha = long_term_key_sha256("alice", "example.org", "s3cret");
        let md5 = long_term_key("alice", "example.org", "s3cret");
        for (algorithm, key) in [
            (PasswordAlgorithm::Sha256, &sha[..]),
            (PasswordAlgorithm::Md5, &md5[..]),
        ] {
            let got = creds.authenticate_with(UserRef::Name("alice"), algorithm, 0, |k| k == key);
            assert!(got.is_ok(), "{algorithm:?}");
        }
    }

    #[test]
    fn a_key_is_md5_only_unless_the_sha256_key_is_given() {
        let md5 = "0123456789ABCDEF0123456789abcdef";
        let sha = "ab".repeat(32);
        assert_eq!(
            stored(add(None, Some(md5.into()), None)).unwrap(),
            format!("key:{}", md5.to_ascii_lowercase())
        );
        assert_eq!(
            stored(add(None, Some(format!("0X{md5}")), Some(sha.clone()))).unwrap(),
            format!("key:{};sha256:{sha}", md5.to_ascii_lowercase())
        );
        let bad = stored(add(None, Some(md5.into()), Some("ab".repeat(31)))).unwrap_err();
        assert!(bad.contains("--sha256-key"), "{bad}");
    }
}
