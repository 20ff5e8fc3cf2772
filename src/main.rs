//! The `tessera` command: parse arguments, set up logging, load the configuration, call the library.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand};

mod account_cli;
mod admin_cli;
mod assignment_cli;
mod monitor_cli;
mod sp_cli;

use std::net::IpAddr;
use tessera::config::Config;
use tessera::directory::{Directory, NewUser, UserStatus};
use tessera::idp::Idp;
use tessera::keyring::{KeyRing, RotateStep};
use tessera::saml::metadata::parse_sp_metadata;
use tessera::saml::xmldsig::keys::KeyKind;

use std::sync::Arc;
use tessera::config::SessionBackend;
use tessera::mfa::{Mfa, MfaActor};
use tessera::policy::{
    AssignmentTarget, IpRange, IpRule, MfaMethod, PolicyAssignment, PolicyData, Requirement,
    RuleScope, SecurityPolicy, SpRequirement,
};
use tessera::session::{AuthnMethod, MemoryStore, RedisStore, SessionStore};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A SAML 2.0 single sign-on identity provider"
)]
struct Cli {
    /// Configuration file (tessera.toml). Without it, embedded defaults apply; TESSERA_* variables
    /// override either.
    #[arg(long, global = true, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the identity provider.
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage service providers.
    #[command(subcommand)]
    Sp(SpCommand),
    /// Manage Tessera's signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage IP allowlist rules.
    #[command(subcommand)]
    IpRule(IpRuleCommand),
    /// Manage security policies (risk tiers) and explain access decisions.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Set what an SP requires on top of its users' rules and policies.
    #[command(subcommand)]
    SpAccess(SpAccessCommand),
    /// Grant SPs to users by attribute, group and role (conditional app assignment).
    #[command(subcommand)]
    AssignmentRule(assignment_cli::AssignmentRuleCommand),
    /// List and end users' SSO sessions (Redis backend only: memory sessions live in the server).
    #[command(subcommand)]
    Session(SessionCommand),
    /// Print Tessera's signed IdP metadata.
    Metadata,
    /// Lift the sign-in lockout of a client address (Redis backend only).
    UnlockAddress { ip: IpAddr },
    /// Show and export login events (the monitoring dashboard's queries).
    #[command(subcommand)]
    Events(monitor_cli::EventsCommand),
    /// Grant, revoke and list admin roles (delegated administration).
    #[command(subcommand)]
    Admin(admin_cli::AdminCommand),
    /// Create, list and revoke admin API tokens.
    #[command(subcommand)]
    Token(admin_cli::TokenCommand),
}

#[derive(Subcommand)]
enum SessionCommand {
    /// List a user's live sessions: key prefix, address, user agent, start, last use, apps.
    List { username: String },
    /// End one session of a user (by key or key prefix from `session list`) or all of them.
    End {
        username: String,
        /// The session key (or a unique prefix of it) as printed by `session list`.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        key: Option<String>,
        /// End every session of the user.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from standard input (one line).
    Add {
        username: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        department: Option<String>,
    },
    /// List users.
    List,
    /// Show one user.
    Show { username: String },
    /// Disable a user; their sessions end at their next request.
    Disable { username: String },
    /// Enable a disabled user.
    Enable { username: String },
    /// Show a user's second factors and their MFA audit trail.
    Mfa { username: String },
    /// Lift a user's sign-in lockout (too many failed attempts) and clear the count (Redis backend
    /// only: memory counters live in the server).
    Unlock { username: String },
    /// Remove all of a user's second factors (lost devices). Recorded in the MFA audit trail; if
    /// their policy requires MFA, the user enrols again at the next sign-in. Their sessions end.
    ResetMfa {
        username: String,
        /// The administrator doing it, for the audit trail (default: recorded as the console).
        #[arg(long)]
        by: Option<String>,
    },
    #[command(flatten)]
    Account(account_cli::AccountCommand),
}

#[derive(Subcommand)]
enum SpCommand {
    /// Register an SP from its metadata: a file path or an http(s) URL (plain http only to the
    /// loopback or with --pin-cert).
    Add(sp_cli::AddArgs),
    /// List registered SPs.
    List,
    /// Show one SP.
    Show { entity_id: String },
    /// Remove an SP.
    Remove { entity_id: String },
    /// Assign an SP to a user, so they can sign in to it.
    Assign { entity_id: String, username: String },
    #[command(flatten)]
    Registration(sp_cli::SpRegistrationCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the signing key and certificate (if absent, or always with --force).
    Generate {
        /// An ECDSA P-256 key instead of RSA-2048.
        #[arg(long)]
        ec: bool,
        #[arg(long)]
        force: bool,
    },
    /// One rollover step: publish a next key, or promote the published next key.
    Rotate {
        #[arg(long)]
        ec: bool,
    },
    /// Show the keys and their certificates.
    List,
}

/// The acting admin, for the no-self-lockout rule: a change that would deny a fresh sign-in of
/// `--admin` from `--admin-ip` (where it is admitted now) is refused unless `--confirm` is given.
#[derive(clap::Args)]
struct LockoutArgs {
    /// The admin making the change.
    #[arg(long, requires = "admin_ip")]
    admin: Option<String>,
    /// The address the admin signs in from.
    #[arg(long, requires = "admin")]
    admin_ip: Option<IpAddr>,
    /// Apply the change even if it locks the admin out.
    #[arg(long)]
    confirm: bool,
}

/// Whom an IP rule applies to: exactly one kind.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct ScopeArgs {
    /// Every user.
    #[arg(long)]
    everyone: bool,
    /// Users with this role (repeat for several).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Users in this group (repeat for several).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// This user (repeat for several).
    #[arg(long = "user")]
    users: Vec<String>,
}

/// Who a policy is assigned to: exactly one.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    group: Option<String>,
    #[arg(long)]
    role: Option<String>,
}

/// Settings of `policy add` / `policy update`; unset ones keep the default (add) or current value (update).
#[derive(clap::Args)]
struct PolicySettings {
    /// Require a second factor at sign-in and at every SSO.
    #[arg(long)]
    mfa: bool,
    /// A second factor that satisfies MFA under this policy (repeat); default: all.
    #[arg(long = "mfa-method")]
    mfa_methods: Vec<MfaMethod>,
    /// Absolute session lifetime in seconds.
    #[arg(long)]
    absolute_secs: Option<u64>,
    /// Idle timeout in seconds.
    #[arg(long)]
    idle_secs: Option<u64>,
    /// How recent the MFA (without MFA: the sign-in) must be for a new SSO, in seconds.
    #[arg(long)]
    reauth_secs: Option<u64>,
    /// Minimum password length.
    #[arg(long)]
    min_password: Option<u32>,
    /// How many of the latest passwords a new one may not repeat (0-24).
    #[arg(long)]
    password_history: Option<u32>,
    /// Days after which a password must be changed at the next sign-in.
    #[arg(long)]
    password_max_age_days: Option<u32>,
    /// How many security questions users choose at first sign-in (0-5; used by self-service recovery).
    #[arg(long)]
    security_questions: Option<u32>,
    /// The policy's own allowlist (repeat); the address must also be inside it.
    #[arg(long = "range")]
    ranges: Vec<IpRange>,
    /// Make this the default policy (for users no assignment reaches).
    #[arg(long)]
    default: bool,
    /// Require a second factor for a sign-in from a country or a device never seen for the user.
    #[arg(long)]
    mfa_on_new_context: bool,
}

#[derive(Subcommand)]
enum IpRuleCommand {
    /// Add a rule: its ranges (CIDR, address, or from-to) and whom it restricts.
    Add {
        name: String,
        #[arg(long = "range", required = true)]
        ranges: Vec<IpRange>,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        lockout: LockoutArgs,
    },
    /// List rules.
    List,
    /// Remove a rule.
    Remove {
        name: String,
        #[command(flatten)]
        lockout: LockoutArgs,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Add a security policy.
    Add {
        name: String,
        #[command(flatten)]
        settings: PolicySettings,
        #[command(flatten)]
        lockout: LockoutArgs,
    },
    /// Change some settings of a policy; the others keep their values.
    Update {
        name: String,
        #[command(flatten)]
        settings: PolicySettings,
        /// Stop requiring MFA.
        #[arg(long, conflicts_with = "mfa")]
        no_mfa: bool,
        /// Remove the re-authentication interval.
        #[arg(long, conflicts_with = "reauth_secs")]
        no_reauth: bool,
        /// Remove the policy's own allowlist.
        #[arg(long, conflicts_with = "ranges")]
        no_ranges: bool,
        /// Passwords no longer expire.
        #[arg(long, conflicts_with = "password_max_age_days")]
        no_password_max_age: bool,
        /// Stop requiring a second factor for a new country or device.
        #[arg(long, conflicts_with = "mfa_on_new_context")]
        no_mfa_on_new_context: bool,
        #[command(flatten)]
        lockout: LockoutArgs,
    },
    /// List policies and their assignments.
    List,
    /// Remove a policy and its assignments.
    Remove {
        name: String,
        #[command(flatten)]
        lockout: LockoutArgs,
    },
    /// Assign a policy to a user, group or role (replacing that target's assignment).
    Assign {
        name: String,
        #[command(flatten)]
        target: TargetArgs,
        /// Among group and role assignments reaching a user, the highest wins.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        #[command(flatten)]
        lockout: LockoutArgs,
    },
    /// Remove the assignment of a user, group or role.
    Unassign {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        lockout: LockoutArgs,
    },
    /// Print the decision (admit, step up, deny) for a user signing in from an address, optionally to an
    /// SP, and every rule and policy that led to it.
    Explain {
        #[arg(long)]
        user: String,
        #[arg(long)]
        ip: IpAddr,
        /// The SP's entityID.
        #[arg(long)]
        sp: Option<String>,
        /// A second factor the session also completed just now (repeat); the password is implied.
        #[arg(long = "method", value_parser = parse_authn_method)]
        methods: Vec<AuthnMethod>,
    },
}

#[derive(Subcommand)]
enum SpAccessCommand {
    /// Set an SP's allowlist and minimum session strength (replacing what was set).
    Set {
        entity_id: String,
        /// The SP's own allowlist (repeat); the address must also be inside it.
        #[arg(long = "range")]
        ranges: Vec<IpRange>,
        /// Sessions reaching this SP must include MFA.
        #[arg(long)]
        require_mfa: bool,
        /// ... done within this many seconds (implies --require-mfa).
        #[arg(long)]
        mfa_within_secs: Option<u64>,
    },
    /// Show what an SP requires.
    Show { entity_id: String },
    /// Remove an SP's requirements.
    Clear { entity_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::User(c) => user(&config, c).await,
        Command::Sp(c) => sp(&config, c).await,
        Command::Keys(c) => keys(&config, c),
        Command::IpRule(c) => ip_rule(&config, c).await,
        Command::Policy(c) => policy(&config, c).await,
        Command::SpAccess(c) => sp_access(&config, c).await,
        Command::AssignmentRule(c) => assignment_cli::run(&directory(&config).await?, c).await,
        Command::Session(c) => session(&config, c).await,
        Command::Admin(c) => admin_cli::admin(&directory(&config).await?, c).await,
        Command::Token(c) => admin_cli::token(&directory(&config).await?, c).await,
        Command::UnlockAddress { ip } => monitor_cli::unlock_address(&config, ip).await,
        Command::Events(c) => monitor_cli::events(&config, c).await,
        Command::Metadata => {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| e.to_string())?;
            let (idp, _) = Idp::start(Config {
                demo: false,
                ..config
            })
            .await
            .map_err(|e| e.to_string())?;
            println!("{}", idp.metadata_xml);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let listen = config.listen;
    let base = config.base().to_owned();
    let (idp, report) = Idp::start(config).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Tessera is listening on {base}");
    if report.generated_key {
        let _ = writeln!(
            out,
            "  generated a signing key in {}",
            idp.config.certs_dir.display()
        );
    }
    for sp in &report.registered {
        let _ = writeln!(out, "  service provider registered from metadata/: {sp}");
    }
    if let Some((user, password)) = &report.demo_user {
        let _ = writeln!(out, "  demo user: {user} / {password}");
    }
    let _ = writeln!(out, "  IdP metadata:   {base}/saml/metadata");
    let _ = writeln!(out, "  sign in:        {base}/login");
    let _ = writeln!(out, "  my apps:        {base}/apps");
    drop(out);
    // Metadata registered from URLs with --refresh-secs is fetched again when its interval elapses.
    let _refresher = tessera::sp_registration::spawn_refresher(
        idp.directory.clone(),
        tessera::sp_registration::FetchLimits::from_config(&idp.config.sp_metadata),
        std::time::Duration::from_secs(idp.config.sp_metadata.refresh_check_secs),
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tessera::web::serve(std::sync::Arc::new(idp), listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// The shared session store; the memory backend lives inside the server process, out of reach.
async fn session_store(config: &Config) -> Result<RedisStore, String> {
    match config.session.backend {
        SessionBackend::Memory => Err(
            "sessions are in the server's memory; use the Redis backend to manage them from the CLI"
                .to_owned(),
        ),
        SessionBackend::Redis => {
            RedisStore::connect(&config.session.redis_url, &config.session.key_prefix)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

fn unix_time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "?".to_owned())
}

async fn session(config: &Config, command: SessionCommand) -> Result<(), String> {
    let store = session_store(config).await?;
    let directory = directory(config).await?;
    let username = match &command {
        SessionCommand::List { username } | SessionCommand::End { username, .. } => {
            username.clone()
        }
    };
    let user = directory
        .get_user_by_username(&username)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no such user: {username}"))?;
    let sessions = store
        .list_user_sessions(user.id)
        .await
        .map_err(|e| e.to_string())?;
    match command {
        SessionCommand::List { .. } => {
            for s in &sessions {
                let apps = s
                    .session
                    .sp_sessions
                    .iter()
                    .map(|sp| sp.sp_entity_id.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    s.key.as_str().get(..16).unwrap_or(""),
                    s.session.client_ip,
                    s.session.user_agent,
                    unix_time(s.session.created_at),
                    unix_time(s.session.last_seen),
                    if apps.is_empty() { "-" } else { &apps }
                );
            }
            if sessions.is_empty() {
                println!("no live sessions for {username}");
            }
        }
        SessionCommand::End { all: true, .. } => {
            let ended = store
                .delete_user_sessions(user.id)
                .await
                .map_err(|e| e.to_string())?;
            println!("ended {ended} session(s) of {username}");
        }
        SessionCommand::End { key, .. } => {
            let prefix = key.unwrap_or_default();
            let matching: Vec<_> = sessions
                .iter()
                .filter(|s| !prefix.is_empty() && s.key.as_str().starts_with(prefix.as_str()))
                .collect();
            let [only] = matching.as_slice() else {
                return Err(format!(
                    "{} sessions of {username} match key {prefix:?}; give a unique key prefix",
                    matching.len()
                ));
            };
            store
                .delete_for_user(user.id, &only.key)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "ended session {} of {username}",
                only.key.as_str().get(..16).unwrap_or("")
            );
        }
    }
    Ok(())
}

async fn directory(config: &Config) -> Result<Directory, String> {
    let hasher = config.password_hasher().map_err(|e| e.to_string())?;
    Directory::connect_with(&config.database_url, hasher)
        .await
        .map_err(|e| e.to_string())
}

fn read_password() -> Result<String, String> {
    eprint!("Password: ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err("no password given on standard input".into());
    }
    Ok(password)
}

async fn user(config: &Config, command: UserCommand) -> Result<(), String> {
    let directory = directory(config).await?;
    match command {
        UserCommand::Add {
            username,
            email,
            display_name,
            department,
        } => {
            let password = read_password()?;
            let user = directory
                .create_user(NewUser {
                    username,
                    password,
                    email,
                    display_name,
                    department,
                    ..NewUser::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            println!("added user {}", user.username);
        }
        UserCommand::List => {
            for u in directory.list_users().await.map_err(|e| e.to_string())? {
                println!(
                    "{}\t{}\t{}",
                    u.username,
                    u.status,
                    u.email.unwrap_or_default()
                );
            }
        }
        UserCommand::Show { username } => {
            let u = directory
                .get_user_by_username(&username)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("user {username:?} not found"))?;
            // Directly assigned or granted by a rule (`tessera assignment-rule apps` says why).
            let rules = directory.load_rule_set().await.map_err(|e| e.to_string())?;
            let apps = directory
                .app_access(&u, &rules)
                .await
                .map_err(|e| e.to_string())?;
            println!("username:     {}", u.username);
            println!("status:       {}", u.status);
            println!("email:        {}", u.email.unwrap_or_default());
            println!("display name: {}", u.display_name.unwrap_or_default());
            println!("department:   {}", u.department.unwrap_or_default());
            println!(
                "apps:         {}",
                apps.iter()
                    .map(|a| a.entity_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        UserCommand::Disable { username } => {
            directory
                .set_user_status(&username, UserStatus::Disabled)
                .await
                .map_err(|e| e.to_string())?;
            println!("disabled {username}");
            // With a shared store the sessions end now; the SSO path refuses them anyway.
            if config.session.backend == SessionBackend::Redis {
                let user = directory
                    .get_user_by_username(&username)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no such user: {username}"))?;
                let ended = session_store(config)
                    .await?
                    .delete_user_sessions(user.id)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("ended {ended} session(s) of {username}");
            }
        }
        UserCommand::Enable { username } => {
            directory
                .set_user_status(&username, UserStatus::Active)
                .await
                .map_err(|e| e.to_string())?;
            println!("enabled {username}");
        }
        UserCommand::Mfa { username } => {
            let user = find_user(&directory, &username).await?;
            let mfa = mfa_service(config, &directory).await?;
            let factors = mfa.factors(user.id).await.map_err(|e| e.to_string())?;
            let totp = match (factors.totp, factors.totp_pending) {
                (true, _) => "active",
                (false, true) => "enrolment pending",
                (false, false) => "none",
            };
            println!("user:           {}", user.username);
            println!("totp:           {totp}");
            println!("webauthn:       {}", factors.webauthn.join(", "));
            println!("recovery codes: {} unused", factors.recovery_codes_left);
            println!("events:");
            for event in mfa.events(user.id).await.map_err(|e| e.to_string())? {
                let at = chrono::DateTime::<Utc>::from_timestamp(event.at, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                println!(
                    "  {at}\t{}\t{}\t{}",
                    event.action.as_str(),
                    event.actor.to_stored(),
                    event.detail
                );
            }
        }
        UserCommand::Unlock { username } => monitor_cli::unlock_user(config, &username).await?,
        UserCommand::ResetMfa { username, by } => {
            let user = find_user(&directory, &username).await?;
            let mfa = mfa_service(config, &directory).await?;
            let actor = match by {
                Some(admin) if !admin.trim().is_empty() => MfaActor::Admin(admin.trim().to_owned()),
                _ => MfaActor::Console,
            };
            let reset = mfa
                .reset_factors(user.id, &actor)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "reset the second factors of {}: totp {}, {} webauthn authenticator(s), {} recovery code(s) removed; recorded as {}",
                user.username,
                if reset.totp { "removed" } else { "none" },
                reset.webauthn,
                reset.recovery_codes,
                actor.to_stored()
            );
            account_cli::end_sessions(config, &directory, user.id, &user.username).await?;
        }
        UserCommand::Account(c) => account_cli::run(config, &directory, c, read_password).await?,
    }
    Ok(())
}

async fn find_user(
    directory: &Directory,
    username: &str,
) -> Result<tessera::directory::User, String> {
    directory
        .get_user_by_username(username)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("user {username:?} not found"))
}

/// The MFA service as the server builds it (same key, same session store for attempt counters).
async fn mfa_service(config: &Config, directory: &Directory) -> Result<Mfa, String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let key = tessera::idp::mfa_key(config).map_err(|e| e.to_string())?;
    let store: Arc<dyn SessionStore> = match config.session.backend {
        SessionBackend::Memory => Arc::new(MemoryStore::new()),
        SessionBackend::Redis => Arc::new(
            RedisStore::connect(&config.session.redis_url, &config.session.key_prefix)
                .await
                .map_err(|e| e.to_string())?,
        ),
    };
    Mfa::new(directory.clone(), store, key, config.mfa.issuer.clone()).map_err(|e| e.to_string())
}

async fn sp(config: &Config, command: SpCommand) -> Result<(), String> {
    let directory = directory(config).await?;
    match command {
        SpCommand::Add(args) => sp_cli::add(config, &directory, args).await?,
        SpCommand::Registration(c) => sp_cli::run(config, &directory, c).await?,
        SpCommand::List => {
            for sp in directory.list_sps().await.map_err(|e| e.to_string())? {
                let state = if sp.settings.enabled {
                    "enabled"
                } else {
                    "disabled"
                };
                println!("{}\t{}\t{}", sp.entity_id, state, sp.display_name);
            }
        }
        SpCommand::Show { entity_id } => {
            let sp = directory
                .get_sp(&entity_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("service provider {entity_id:?} not found"))?;
            let parsed = parse_sp_metadata(sp.metadata_xml.as_bytes(), Utc::now())
                .map_err(|e| e.to_string())?;
            println!("entityID:       {}", sp.entity_id);
            println!("display name:   {}", sp.display_name);
            println!("enabled:        {}", sp.settings.enabled);
            println!(
                "NameID format:  {} (from {})",
                sp.settings.nameid_format, sp.settings.nameid_attribute
            );
            println!(
                "signs:          assertion={} response={}",
                sp.settings.sign_assertion, sp.settings.sign_response
            );
            println!("encryption:     {}", sp.settings.encrypt_assertion);
            if let Some(m) = parsed.iter().find(|m| m.entity_id == sp.entity_id) {
                for acs in &m.acs {
                    println!("ACS:            {} {}", acs.binding, acs.location);
                }
                println!("signed requests required: {}", m.authn_requests_signed);
            }
            sp_cli::show(&sp);
        }
        SpCommand::Remove { entity_id } => {
            directory
                .remove_sp(&entity_id)
                .await
                .map_err(|e| e.to_string())?;
            println!("removed {entity_id}");
        }
        SpCommand::Assign {
            entity_id,
            username,
        } => {
            directory
                .assign_app(&username, &entity_id)
                .await
                .map_err(|e| e.to_string())?;
            println!("assigned {entity_id} to {username}");
        }
    }
    Ok(())
}

fn keys(config: &Config, command: KeysCommand) -> Result<(), String> {
    let kind = |ec: bool| {
        if ec {
            KeyKind::EcP256
        } else {
            KeyKind::Rsa2048
        }
    };
    let dir = &config.certs_dir;
    match command {
        KeysCommand::Generate { ec, force } => {
            if KeyRing::generate(dir, kind(ec), &config.entity_id(), Utc::now(), force)
                .map_err(|e| e.to_string())?
            {
                println!("generated {}", dir.join("signing.key").display());
            } else {
                println!(
                    "a signing key already exists in {} (use --force to replace it)",
                    dir.display()
                );
            }
        }
        KeysCommand::Rotate { ec } => {
            match KeyRing::rotate(dir, kind(ec), &config.entity_id(), Utc::now())
                .map_err(|e| e.to_string())?
            {
                RotateStep::NextPublished => {
                    println!("next key created and published in metadata; run `keys rotate` again once SPs refreshed")
                }
                RotateStep::NextPromoted => {
                    println!("the next key now signs; restart Tessera to use it")
                }
            }
        }
        KeysCommand::List => {
            let ring = KeyRing::load(dir).map_err(|e| e.to_string())?;
            for (label, key) in std::iter::once(("current", &ring.current))
                .chain(ring.next.iter().map(|k| ("next", k)))
            {
                let cert = key.certificate();
                let digest = cert
                    .digest(openssl::hash::MessageDigest::sha256())
                    .map_err(|e| e.to_string())?;
                println!(
                    "{label}\t{:?}\tSHA-256 {}\tnot after {}",
                    key.algorithm(),
                    hex::encode(digest),
                    cert.not_after()
                );
            }
        }
    }
    Ok(())
}

fn parse_authn_method(s: &str) -> Result<AuthnMethod, String> {
    match s {
        "password" => Ok(AuthnMethod::Password),
        other => other.parse::<MfaMethod>().map(MfaMethod::to_authn),
    }
}

impl TargetArgs {
    fn target(&self) -> Result<AssignmentTarget, String> {
        match (&self.user, &self.group, &self.role) {
            (Some(u), None, None) => Ok(AssignmentTarget::User(u.clone())),
            (None, Some(g), None) => Ok(AssignmentTarget::Group(g.clone())),
            (None, None, Some(r)) => Ok(AssignmentTarget::Role(r.clone())),
            _ => Err("give exactly one of --user, --group, --role".into()),
        }
    }
}

impl PolicySettings {
    /// Applies the given settings to `p`.
    fn apply(self, p: &mut SecurityPolicy) {
        if self.mfa {
            p.mfa_required = true;
        }
        if !self.mfa_methods.is_empty() {
            p.mfa_methods = self.mfa_methods;
        }
        if let Some(v) = self.absolute_secs {
            p.session_absolute_secs = v;
        }
        if let Some(v) = self.idle_secs {
            p.session_idle_secs = v;
        }
        if let Some(v) = self.reauth_secs {
            p.reauth_interval_secs = Some(v);
        }
        if let Some(v) = self.min_password {
            p.password_min_length = v;
        }
        if let Some(v) = self.password_history {
            p.password_history = v;
        }
        if let Some(v) = self.password_max_age_days {
            p.password_max_age_days = Some(v);
        }
        if let Some(v) = self.security_questions {
            p.security_questions_required = v;
        }
        if !self.ranges.is_empty() {
            p.ip_ranges = Some(self.ranges);
        }
        if self.default {
            p.is_default = true;
        }
        if self.mfa_on_new_context {
            p.mfa_on_new_device_or_country = true;
        }
    }
}

/// The no-self-lockout rule: with --admin/--admin-ip, refuses a change (`change` applied to the current
/// declarations) that would deny that admin a fresh sign-in from that address, unless --confirm.
async fn check_lockout(
    directory: &Directory,
    lockout: &LockoutArgs,
    change: impl FnOnce(&mut PolicyData),
) -> Result<(), String> {
    let (Some(admin), Some(ip)) = (&lockout.admin, lockout.admin_ip) else {
        return Ok(());
    };
    // The same check as the admin API's IP-rule and policy endpoints.
    let decision = directory
        .lockout_preview(admin, ip, Utc::now().timestamp(), change)
        .await
        .map_err(|e| e.to_string())?;
    match decision {
        Some(decision) if lockout.confirm => {
            eprintln!("warning: this change locks {admin} out from {ip} (confirmed):\n{decision}");
            Ok(())
        }
        Some(decision) => Err(format!(
            "refused: this change would lock {admin} out from {ip}:\n{decision}re-run with --confirm to apply it anyway"
        )),
        None => Ok(()),
    }
}

fn ranges_text(ranges: &[IpRange]) -> String {
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn ip_rule(config: &Config, command: IpRuleCommand) -> Result<(), String> {
    let directory = directory(config).await?;
    match command {
        IpRuleCommand::Add {
            name,
            ranges,
            scope,
            lockout,
        } => {
            let scope = if scope.everyone {
                RuleScope::Everyone
            } else if !scope.roles.is_empty() {
                RuleScope::Roles(scope.roles)
            } else if !scope.groups.is_empty() {
                RuleScope::Groups(scope.groups)
            } else {
                RuleScope::Users(scope.users)
            };
            let rule = IpRule {
                name,
                ranges,
                scope,
            };
            rule.validate().map_err(|e| e.to_string())?;
            let added = rule.clone();
            check_lockout(&directory, &lockout, move |d| d.ip_rules.push(added)).await?;
            directory
                .add_ip_rule(&rule)
                .await
                .map_err(|e| e.to_string())?;
            println!("added ip rule {} for {}", rule.name, rule.scope);
        }
        IpRuleCommand::List => {
            for (rule, source) in directory.list_ip_rules().await.map_err(|e| e.to_string())? {
                println!(
                    "{}\t{}\t{}\t({source})",
                    rule.name,
                    rule.scope,
                    ranges_text(&rule.ranges)
                );
            }
        }
        IpRuleCommand::Remove { name, lockout } => {
            let gone = name.clone();
            check_lockout(&directory, &lockout, move |d| {
                d.ip_rules.retain(|r| r.name != gone)
            })
            .await?;
            directory
                .remove_ip_rule(&name)
                .await
                .map_err(|e| e.to_string())?;
            println!("removed ip rule {name}");
        }
    }
    Ok(())
}

async fn policy(config: &Config, command: PolicyCommand) -> Result<(), String> {
    let directory = directory(config).await?;
    match command {
        PolicyCommand::Add {
            name,
            settings,
            lockout,
        } => {
            let mut p = SecurityPolicy::new(name);
            settings.apply(&mut p);
            p.validate().map_err(|e| e.to_string())?;
            let added = p.clone();
            check_lockout(&directory, &lockout, move |d| {
                if added.is_default {
                    d.policies.iter_mut().for_each(|x| x.is_default = false);
                }
                d.policies.push(added);
            })
            .await?;
            directory.add_policy(&p).await.map_err(|e| e.to_string())?;
            println!("added policy {}", p.name);
        }
        PolicyCommand::Update {
            name,
            settings,
            no_mfa,
            no_reauth,
            no_ranges,
            no_mfa_on_new_context,
            no_password_max_age,
            lockout,
        } => {
            let (mut p, _) = directory
                .get_policy(&name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("policy {name:?} not found"))?;
            settings.apply(&mut p);
            if no_mfa {
                p.mfa_required = false;
            }
            if no_mfa_on_new_context {
                p.mfa_on_new_device_or_country = false;
            }
            if no_reauth {
                p.reauth_interval_secs = None;
            }
            if no_ranges {
                p.ip_ranges = None;
            }
            if no_password_max_age {
                p.password_max_age_days = None;
            }
            p.validate().map_err(|e| e.to_string())?;
            let updated = p.clone();
            check_lockout(&directory, &lockout, move |d| {
                if updated.is_default {
                    d.policies.iter_mut().for_each(|x| x.is_default = false);
                }
                d.policies.retain(|x| x.name != updated.name);
                d.policies.push(updated);
            })
            .await?;
            directory
                .update_policy(&p)
                .await
                .map_err(|e| e.to_string())?;
            println!("updated policy {}", p.name);
        }
        PolicyCommand::List => {
            let assignments = directory
                .list_policy_assignments()
                .await
                .map_err(|e| e.to_string())?;
            for (p, source) in directory.list_policies().await.map_err(|e| e.to_string())? {
                let methods: Vec<&str> = p.mfa_methods.iter().map(|m| m.as_str()).collect();
                println!(
                    "{}{}\tmfa {} ({})\tsession {}s, idle {}s\treauth {}\tpassword >= {}\tallowlist {}\t({source})",
                    p.name,
                    if p.is_default { " [default]" } else { "" },
                    if p.mfa_required { "required" } else { "not required" },
                    methods.join(", "),
                    p.session_absolute_secs,
                    p.session_idle_secs,
                    p.reauth_interval_secs.map_or("-".to_owned(), |s| format!("{s}s")),
                    p.password_min_length,
                    p.ip_ranges.as_deref().map_or("-".to_owned(), ranges_text),
                );
                if p.mfa_on_new_device_or_country {
                    println!("  mfa for a sign-in from a new country or device");
                }
                println!(
                    "  passwords: history {}, max age {}; security questions {}",
                    p.password_history,
                    p.password_max_age_days
                        .map_or("-".to_owned(), |d| format!("{d} days")),
                    p.security_questions_required
                );
                for (a, source) in assignments.iter().filter(|(a, _)| a.policy == p.name) {
                    println!(
                        "  assigned to {} (priority {})\t({source})",
                        a.target, a.priority
                    );
                }
            }
        }
        PolicyCommand::Remove { name, lockout } => {
            let gone = name.clone();
            check_lockout(&directory, &lockout, move |d| {
                d.policies.retain(|p| p.name != gone);
                d.assignments.retain(|a| a.policy != gone);
            })
            .await?;
            let removed = directory
                .remove_policy(&name)
                .await
                .map_err(|e| e.to_string())?;
            println!("removed policy {name}");
            for a in removed {
                println!("  and its assignment to {}", a.target);
            }
        }
        PolicyCommand::Assign {
            name,
            target,
            priority,
            lockout,
        } => {
            let assignment = PolicyAssignment {
                policy: name,
                target: target.target()?,
                priority,
            };
            let added = assignment.clone();
            check_lockout(&directory, &lockout, move |d| {
                d.assignments.retain(|a| a.target != added.target);
                d.assignments.push(added);
            })
            .await?;
            directory
                .assign_policy(&assignment)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "assigned policy {} to {}",
                assignment.policy, assignment.target
            );
        }
        PolicyCommand::Unassign { target, lockout } => {
            let target = target.target()?;
            let gone = target.clone();
            check_lockout(&directory, &lockout, move |d| {
                d.assignments.retain(|a| a.target != gone)
            })
            .await?;
            if directory
                .unassign_policy(&target)
                .await
                .map_err(|e| e.to_string())?
            {
                println!("removed the policy assignment of {target}");
            } else {
                println!("{target} had no policy assignment");
            }
        }
        PolicyCommand::Explain {
            user,
            ip,
            sp,
            methods,
        } => {
            // The same code path as GET /api/v1/explain.
            let decision = directory
                .explain_access(&user, ip, sp.as_deref(), &methods, Utc::now().timestamp())
                .await
                .map_err(|e| e.to_string())?;
            print!("{decision}");
        }
    }
    Ok(())
}

async fn sp_access(config: &Config, command: SpAccessCommand) -> Result<(), String> {
    let directory = directory(config).await?;
    match command {
        SpAccessCommand::Set {
            entity_id,
            ranges,
            require_mfa,
            mfa_within_secs,
        } => {
            let req = SpRequirement {
                ip_ranges: (!ranges.is_empty()).then_some(ranges),
                min: (require_mfa || mfa_within_secs.is_some()).then_some(Requirement {
                    mfa: true,
                    mfa_within_secs,
                }),
            };
            if req.is_empty() {
                return Err("nothing to set: give --range, --require-mfa or --mfa-within-secs (or use `sp-access clear`)".into());
            }
            directory
                .set_sp_access(&entity_id, &req)
                .await
                .map_err(|e| e.to_string())?;
            println!("set the access requirements of {entity_id}");
        }
        SpAccessCommand::Show { entity_id } => {
            if directory
                .get_sp(&entity_id)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err(format!("service provider {entity_id:?} not found"));
            }
            match directory
                .get_sp_access(&entity_id)
                .await
                .map_err(|e| e.to_string())?
            {
                None => {
                    println!("{entity_id} requires nothing beyond its users' rules and policies")
                }
                Some(req) => {
                    println!(
                        "allowlist:    {}",
                        req.ip_ranges.as_deref().map_or("-".to_owned(), ranges_text)
                    );
                    let min = match req.min {
                        Some(Requirement {
                            mfa: true,
                            mfa_within_secs: Some(w),
                        }) => format!("MFA within {w}s"),
                        Some(Requirement {
                            mfa: true,
                            mfa_within_secs: None,
                        }) => "MFA".to_owned(),
                        _ => "-".to_owned(),
                    };
                    println!("minimum:      {min}");
                }
            }
        }
        SpAccessCommand::Clear { entity_id } => {
            directory
                .set_sp_access(&entity_id, &SpRequirement::default())
                .await
                .map_err(|e| e.to_string())?;
            println!("cleared the access requirements of {entity_id}");
        }
    }
    Ok(())
}
