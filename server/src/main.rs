//! `pilothouse`: serve the control plane, or administer it from the shell.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use control::audit_export::{ExportFormat, ExportRange};
use control::{ControlError, Role};
use secrecy::{ExposeSecret, SecretString};
use server::{audit_cli, Application, Config, Overrides};

#[derive(Parser)]
#[command(
    name = "pilothouse",
    version,
    about = "Pilothouse: a self-hostable control plane for server fleets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the dashboard.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on (default 127.0.0.1:3000).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Address of the agent gateway's TLS listener (default 127.0.0.1:8443).
        #[arg(long, value_name = "ADDR")]
        agent_listen: Option<SocketAddr>,
    },
    /// Administer accounts from the shell.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Export the audit log, publish its signed checkpoints, verify an export offline.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the encryption of secrets at rest.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Make the release key and sign agent releases (done by whoever builds
    /// releases, with a key the control plane never holds).
    Release {
        #[command(subcommand)]
        command: ReleaseCommand,
    },
}

#[derive(Subcommand)]
enum ReleaseCommand {
    /// Make a new Ed25519 release key (PKCS#8 PEM, mode 0600) and print its
    /// public key. The file must not exist.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign an agent binary into a releases directory (the gateway serves
    /// `agent_releases_dir`, by default `releases` in the data directory).
    Sign {
        /// The release key from `release keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The pilothouse-agent binary.
        #[arg(long, value_name = "FILE")]
        binary: PathBuf,
        /// The releases directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The release's version [default: what the binary's --version prints].
        #[arg(long, value_name = "VERSION")]
        version: Option<String>,
        /// The binary's platform [default: this machine's, such as x86_64-linux].
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Make a new master key and re-wrap every secret's data key under it,
    /// while servers keep running; the old key is then removed.
    RotateMasterKey {
        #[command(flatten)]
        common: Common,
        /// Only write the next key (`master.key.next` beside the key) and
        /// print its id: for a key that servers read from a systemd
        /// credential, which must each hold the next key before the switch.
        #[arg(long)]
        prepare: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write an organisation's audit events to stdout (recorded in the log itself).
    Export {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "NAME")]
        org: String,
        /// jsonl (for `audit verify`) or csv.
        #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
        format: ExportFormat,
        /// Only events at or after this UTC time: 2026-12-01 or 2026-12-01T14:30Z.
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        since: Option<control::Timestamp>,
        /// Only events before this UTC time.
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        until: Option<control::Timestamp>,
    },
    /// Write an organisation's signed checkpoints to stdout (JSON Lines).
    Checkpoints {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "NAME")]
        org: String,
        /// Sign a checkpoint over the chain as it stands first.
        #[arg(long)]
        sign_now: bool,
    },
    /// Print the audit public key to pin (creating the audit key the first time).
    Key {
        #[command(flatten)]
        common: Common,
    },
    /// Verify an export against checkpoints and the pinned key, offline
    /// (exit 0 verified, 1 not verified, 2 unusable input).
    Verify {
        /// The export (JSON Lines).
        #[arg(long, value_name = "FILE")]
        export: PathBuf,
        /// The checkpoints (JSON Lines).
        #[arg(long, value_name = "FILE")]
        checkpoints: PathBuf,
        /// The audit public key, or a file holding it.
        #[arg(long, value_name = "KEY")]
        key: String,
    },
}

fn parse_format(s: &str) -> Result<ExportFormat, String> {
    s.parse()
}

fn parse_date(s: &str) -> Result<control::Timestamp, String> {
    control::audit_export::parse_time(s)
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a user (and the organisation if missing). The password is read from stdin.
    AddUser {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "NAME")]
        org: String,
        #[arg(long, value_name = "EMAIL")]
        email: String,
        #[arg(long, value_name = "ROLE", value_parser = parse_role)]
        role: Role,
    },
    /// Set a new password for an account (every session of it ends). The
    /// password is read from stdin.
    SetPassword {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "EMAIL")]
        email: String,
    },
    /// Create a one-time agent registration token; it is printed alone on the last line.
    RegistrationToken {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "NAME")]
        org: String,
        /// How long the token stays valid: e.g. 30m, 1h, 2d (default 1h, at most 7d).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_ttl)]
        ttl: i64,
    },
    /// List an organisation's registration tokens, newest first (never their secrets).
    RegistrationTokens {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "NAME")]
        org: String,
    },
    /// Revoke an unused registration token (its id from `registration-tokens`).
    RevokeRegistrationToken {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "NAME")]
        org: String,
        #[arg(value_name = "ID")]
        id: i64,
    },
}

/// Loads the configuration and opens the database for an admin command, or
/// the exit code to end with (2 for bad configuration, 1 otherwise).
async fn admin_store(common: Common) -> Result<control::store::Store, ExitCode> {
    Ok(admin_data(common).await?.1)
}

/// [`admin_store`] with the configuration.
async fn admin_data(common: Common) -> Result<(Config, control::store::Store), ExitCode> {
    let config = common.load(None, None).map_err(|e| usage_error(&e))?;
    admin_data_for(config).await
}

/// The data directory made and the database opened for `config`.
async fn admin_data_for(config: Config) -> Result<(Config, control::store::Store), ExitCode> {
    control::files::private_dir(&config.data_dir).map_err(|e| {
        eprintln!(
            "pilothouse: cannot create {}: {e}",
            config.data_dir.display()
        );
        ExitCode::FAILURE
    })?;
    let store = control::store::Store::connect(config.database_url().expose_secret())
        .await
        .map_err(|e| {
            eprintln!("pilothouse: cannot open the database: {e}");
            ExitCode::FAILURE
        })?;
    Ok((config, store))
}

/// [`admin_data`] for a command that reads the control plane's keys: also
/// where the master key comes from (exit 2 with a sentence when that is
/// misconfigured, before the database is opened).
async fn admin_keys(
    common: Common,
) -> Result<
    (
        Config,
        control::secrets::MasterKeySource,
        control::store::Store,
    ),
    ExitCode,
> {
    let config = common.load(None, None).map_err(|e| usage_error(&e))?;
    let master_key = config.master_key().map_err(|e| usage_error(&e))?;
    let (config, store) = admin_data_for(config).await?;
    Ok((config, master_key, store))
}

/// The exit for an admin command's error: 2 with the sentence for what the
/// operator can fix, 1 for the rest.
fn admin_error(e: ControlError) -> ExitCode {
    match e {
        ControlError::Invalid(_) | ControlError::NotFound(_) | ControlError::Conflict(_) => {
            usage_error(&e.to_string())
        }
        e => {
            eprintln!("pilothouse: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `90s`, `30m`, `1h`, `2d` or plain seconds.
fn parse_ttl(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30m, 1h or 2d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}` is not a duration like 30m, 1h or 2d")),
    };
    Ok(n.saturating_mul(factor))
}

#[derive(Args)]
struct Common {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE", env = "PILOTHOUSE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for local data (default ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// sqlite://... or postgres://... (default: SQLite in the data directory).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|e: control::types::UnknownRole| e.to_string())
}

impl Common {
    fn load(
        self,
        listen: Option<SocketAddr>,
        agent_listen: Option<SocketAddr>,
    ) -> Result<Config, String> {
        Config::load(
            self.config.as_deref(),
            Overrides {
                data_dir: self.data_dir,
                database_url: self.database_url,
                listen,
                agent_listen,
            },
        )
        .map_err(|e| e.to_string())
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pilothouse: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve {
            common,
            listen,
            agent_listen,
        } => {
            let config = match common.load(listen, agent_listen) {
                Ok(c) => c,
                Err(e) => return usage_error(&e),
            };
            let app = match Application::build(config).await {
                Ok(app) => app,
                Err(
                    e @ (server::StartError::Store(control::StoreError::UnsupportedUrl)
                    | server::StartError::WebTls(_)
                    | server::StartError::MasterKey(_)),
                ) => {
                    return usage_error(&format!("cannot start: {e}"));
                }
                Err(e) => {
                    eprintln!("pilothouse: cannot start: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match app.run_until_stopped().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pilothouse: server error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Admin {
            command: AdminCommand::RegistrationToken { common, org, ttl },
        } => {
            let (config, master_key, store) = match admin_keys(common).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let now = control::Timestamp::now();
            let ca = match control::key_vault::open_ring(&store, &master_key).await {
                Ok(ring) => {
                    control::key_vault::agent_ca(&store, &ring, &config.data_dir, now).await
                }
                Err(e) => Err(e),
            };
            let ca = match ca {
                Ok(ca) => ca,
                Err(e) => {
                    store.close().await;
                    eprintln!("pilothouse: agent CA: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let operator = control::access::Operator::command_line(store.clone());
            let result = control::agents::create_registration_token_cli(
                &operator,
                &org,
                &ca.pin(),
                ttl,
                now,
            )
            .await;
            store.close().await;
            match result {
                Ok(token) => {
                    eprintln!(
                        "One-time registration token for organisation {org}, valid until {}. Use it with: pilothouse-agent register --server https://HOST:PORT --token TOKEN",
                        token.expires_at.display_utc()
                    );
                    println!("{}", token.token.expose_secret());
                    ExitCode::SUCCESS
                }
                Err(e @ (ControlError::Invalid(_) | ControlError::NotFound(_))) => {
                    usage_error(&e.to_string())
                }
                Err(e) => {
                    eprintln!("pilothouse: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Admin {
            command: AdminCommand::RegistrationTokens { common, org },
        } => {
            let store = match admin_store(common).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let operator = control::access::Operator::command_line(store.clone());
            let result = control::agents::list_registration_tokens_cli(
                &operator,
                &org,
                control::Timestamp::now(),
            )
            .await;
            store.close().await;
            match result {
                Ok(tokens) => {
                    println!("ID\tSTATE\tCREATED\tEXPIRES\tBY\tAGENT\tREFUSALS");
                    for t in tokens {
                        println!(
                            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                            t.id,
                            t.state.label(),
                            t.created_at.display_utc(),
                            t.expires_at.display_utc(),
                            t.created_by,
                            t.agent.map(|a| a.0).unwrap_or_else(|| "-".into()),
                            t.refusals
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => admin_error(e),
            }
        }
        Command::Admin {
            command: AdminCommand::RevokeRegistrationToken { common, org, id },
        } => {
            let store = match admin_store(common).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let operator = control::access::Operator::command_line(store.clone());
            let result = control::agents::revoke_registration_token_cli(
                &operator,
                &org,
                id,
                control::Timestamp::now(),
            )
            .await;
            store.close().await;
            match result {
                Ok(()) => {
                    println!("revoked registration token {id} of organisation {org}");
                    ExitCode::SUCCESS
                }
                Err(e) => admin_error(e),
            }
        }
        Command::Admin {
            command:
                AdminCommand::AddUser {
                    common,
                    org,
                    email,
                    role,
                },
        } => {
            let (store, password) = match password_command(common).await {
                Ok(v) => v,
                Err(code) => return code,
            };
            let result = control::accounts::add_user_cli(
                &control::access::Operator::command_line(store.clone()),
                &org,
                &email,
                role,
                password,
                control::Timestamp::now(),
            )
            .await;
            store.close().await;
            match result {
                Ok((user, org_id)) => {
                    println!(
                        "created user {} ({email}) as {role} in organisation {org} ({})",
                        user.0, org_id.0
                    );
                    ExitCode::SUCCESS
                }
                Err(e @ (ControlError::Invalid(_) | ControlError::Conflict(_))) => {
                    usage_error(&e.to_string())
                }
                Err(e) => {
                    eprintln!("pilothouse: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Admin {
            command: AdminCommand::SetPassword { common, email },
        } => {
            let (store, password) = match password_command(common).await {
                Ok(v) => v,
                Err(code) => return code,
            };
            let result = control::accounts::set_password_cli(
                &control::access::Operator::command_line(store.clone()),
                &email,
                password,
                control::Timestamp::now(),
            )
            .await;
            store.close().await;
            match result {
                Ok(ended) => {
                    let email = control::accounts::normalize_email(&email).unwrap_or(email);
                    println!("set a new password for {email}; {ended} session(s) signed out");
                    ExitCode::SUCCESS
                }
                Err(e @ (ControlError::Invalid(_) | ControlError::NotFound(_))) => {
                    usage_error(&e.to_string())
                }
                Err(e) => {
                    eprintln!("pilothouse: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Audit { command } => audit(command).await,
        Command::Secrets {
            command: SecretsCommand::RotateMasterKey { common, prepare },
        } => rotate_master_key(common, prepare).await,
        Command::Release { command } => release(command),
    }
}

/// For the admin commands that take a password: the configuration, the
/// password from stdin, and the store; or the exit code after saying why not.
async fn password_command(
    common: Common,
) -> Result<(control::store::Store, SecretString), ExitCode> {
    let config = common.load(None, None).map_err(|e| usage_error(&e))?;
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        return Err(usage_error(&format!(
            "cannot read the password from stdin: {e}"
        )));
    }
    let password = SecretString::from(input.trim_end_matches(['\r', '\n']).to_string());
    if password.expose_secret().is_empty() {
        return Err(usage_error("no password on stdin: pipe the password in."));
    }
    if let Err(e) = control::files::private_dir(&config.data_dir) {
        eprintln!(
            "pilothouse: cannot create {}: {e}",
            config.data_dir.display()
        );
        return Err(ExitCode::FAILURE);
    }
    match control::store::Store::connect(config.database_url().expose_secret()).await {
        Ok(s) => Ok((s, password)),
        Err(e) => {
            eprintln!("pilothouse: cannot open the database: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn release(command: ReleaseCommand) -> ExitCode {
    use server::release_cli::{self, ReleaseCliError};
    let result = match command {
        ReleaseCommand::Keygen { out } => release_cli::keygen(&out).map(|public| {
            eprintln!(
                "release key written to {} (mode 0600): keep it off the control plane. Its public key, {}:",
                out.display(),
                public.fingerprint()
            );
            print!("{}", public.to_pem());
        }),
        ReleaseCommand::Sign {
            key,
            binary,
            out,
            version,
            platform,
        } => release_cli::sign(&release_cli::SignRequest {
            key,
            binary,
            out: out.clone(),
            version,
            platform,
        })
        .map(|s| {
            println!(
                "signed pilothouse-agent {} for {} (SHA-256 {}) with release key {} into {}",
                s.version,
                s.platform,
                s.sha256,
                s.fingerprint,
                out.display()
            );
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(ReleaseCliError::Usage(e)) => usage_error(&e),
        Err(ReleaseCliError::Failed(e)) => {
            eprintln!("pilothouse: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn rotate_master_key(common: Common, prepare: bool) -> ExitCode {
    let (_, master_key, store) = match admin_keys(common).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let path = match master_key {
        control::secrets::MasterKeySource::File(path) => path,
        control::secrets::MasterKeySource::Credential { name, .. } => {
            store.close().await;
            return usage_error(&format!(
                "the master key comes from the systemd credential {name}, which cannot be changed from here: set PILOTHOUSE_MASTER_KEY_FILE to the credential's source file (its LoadCredential= path) and run this again (docs/secrets.md)"
            ));
        }
    };
    if prepare {
        store.close().await;
        return match control::secrets::Keyring::open(&path)
            .and_then(|ring| control::secrets::prepare_next_key(&ring))
        {
            Ok(id) => {
                println!(
                    "next master key {id} is ready beside {}: give it to every server (with a credential: LoadCredential=NAME.next:{}.next), restart them, then run rotate-master-key without --prepare",
                    path.display(),
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(&e.to_string()),
        };
    }
    let started = std::time::Instant::now();
    let result = match control::secrets::Keyring::open(&path) {
        Ok(ring) => control::secrets::rotate_master_key(&store, &ring).await,
        Err(e) => Err(e),
    };
    store.close().await;
    match result {
        Ok(r) => {
            println!(
                "master key rotated: {} -> {}, {} data keys re-wrapped in {:.1} s",
                r.old_key_id,
                r.new_key_id,
                r.rewrapped,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(
            e @ (control::secrets::SecretError::KeyFile { .. }
            | control::secrets::SecretError::WrongMasterKey { .. }),
        ) => usage_error(&e.to_string()),
        Err(e) => {
            eprintln!("pilothouse: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn audit(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify {
            export,
            checkpoints,
            key,
        } => audit_cli::verify(&export, &checkpoints, &key),
        AuditCommand::Key { common } => {
            let (config, master_key, store) = match admin_keys(common).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let keys = audit_cli::KeyPlace {
                data_dir: &config.data_dir,
                master_key: &master_key,
            };
            let result = audit_cli::key(&store, keys).await;
            store.close().await;
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => admin_error(e),
            }
        }
        AuditCommand::Export {
            common,
            org,
            format,
            since,
            until,
        } => {
            let store = match admin_store(common).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let result =
                audit_cli::export(&store, &org, format, ExportRange { since, until }).await;
            store.close().await;
            match result {
                Ok(n) => {
                    eprintln!("exported {n} events");
                    ExitCode::SUCCESS
                }
                Err(e) => admin_error(e),
            }
        }
        AuditCommand::Checkpoints {
            common,
            org,
            sign_now,
        } => {
            let (config, master_key, store) = match admin_keys(common).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let keys = audit_cli::KeyPlace {
                data_dir: &config.data_dir,
                master_key: &master_key,
            };
            let result =
                audit_cli::checkpoints(&store, keys, config.checkpoint_cadence(), &org, sign_now)
                    .await;
            store.close().await;
            match result {
                Ok(n) => {
                    eprintln!("{n} checkpoints");
                    ExitCode::SUCCESS
                }
                Err(e) => admin_error(e),
            }
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("pilothouse: {message}");
    ExitCode::from(2)
}
