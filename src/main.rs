//! The `tessera` command: parse arguments, set up logging, load the configuration, call the library.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand};

use tessera::config::Config;
use tessera::directory::{Directory, NewServiceProvider, NewUser, SpSettings, UserStatus};
use tessera::idp::Idp;
use tessera::keyring::{KeyRing, RotateStep};
use tessera::saml::metadata::parse_sp_metadata;
use tessera::saml::xmldsig::keys::KeyKind;

#[derive(Parser)]
#[command(name = "tessera", version, about = "A SAML 2.0 single sign-on identity provider")]
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
    /// Print Tessera's signed IdP metadata.
    Metadata,
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
}

#[derive(Subcommand)]
enum SpCommand {
    /// Register an SP from its metadata: a file path or an https:// URL.
    Add {
        source: String,
        /// Name shown on the portal (defaults to the entityID).
        #[arg(long)]
        name: Option<String>,
    },
    /// List registered SPs.
    List,
    /// Show one SP.
    Show { entity_id: String },
    /// Remove an SP.
    Remove { entity_id: String },
    /// Assign an SP to a user, so they can sign in to it.
    Assign { entity_id: String, username: String },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
        Command::Metadata => {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| e.to_string())?;
            let (idp, _) = Idp::start(Config { demo: false, ..config }).await.map_err(|e| e.to_string())?;
            println!("{}", idp.metadata_xml);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let listen = config.listen;
    let base = config.base().to_owned();
    let (idp, report) = Idp::start(config).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Tessera is listening on {base}");
    if report.generated_key {
        let _ = writeln!(out, "  generated a signing key in {}", idp.config.certs_dir.display());
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
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tessera::web::serve(std::sync::Arc::new(idp), listener, shutdown).await.map_err(|e| e.to_string())
}

async fn directory(config: &Config) -> Result<Directory, String> {
    Directory::connect(&config.database_url).await.map_err(|e| e.to_string())
}

fn read_password() -> Result<String, String> {
    eprint!("Password: ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err("no password given on standard input".into());
    }
    Ok(password)
}

async fn user(config: &Config, command: UserCommand) -> Result<(), String> {
    let directory = directory(config).await?;
    match command {
        UserCommand::Add { username, email, display_name, department } => {
            let password = read_password()?;
            let user = directory
                .create_user(NewUser { username, password, email, display_name, department, ..NewUser::default() })
                .await
                .map_err(|e| e.to_string())?;
            println!("added user {}", user.username);
        }
        UserCommand::List => {
            for u in directory.list_users().await.map_err(|e| e.to_string())? {
                println!("{}\t{}\t{}", u.username, u.status, u.email.unwrap_or_default());
            }
        }
        UserCommand::Show { username } => {
            let u = directory
                .get_user_by_username(&username)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("user {username:?} not found"))?;
            println!("username:     {}", u.username);
            println!("status:       {}", u.status);
            println!("email:        {}", u.email.unwrap_or_default());
            println!("display name: {}", u.display_name.unwrap_or_default());
            println!("department:   {}", u.department.unwrap_or_default());
            let apps = directory.apps_of(&u.username).await.map_err(|e| e.to_string())?;
            println!("apps:         {}", apps.iter().map(|a| a.entity_id.as_str()).collect::<Vec<_>>().join(", "));
        }
        UserCommand::Disable { username } => {
            directory.set_user_status(&username, UserStatus::Disabled).await.map_err(|e| e.to_string())?;
            println!("disabled {username}");
        }
        UserCommand::Enable { username } => {
            directory.set_user_status(&username, UserStatus::Active).await.map_err(|e| e.to_string())?;
            println!("enabled {username}");
        }
    }
    Ok(())
}

/// Largest metadata document fetched from a URL.
const MAX_METADATA_BYTES: usize = 8 * 1024 * 1024;

async fn fetch_metadata(source: &str) -> Result<String, String> {
    if source.starts_with("http://") {
        return Err("metadata URLs must use https".into());
    }
    if source.starts_with("https://") {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let mut response = client.get(source).send().await.map_err(|e| format!("fetching {source}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("fetching {source}: HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_METADATA_BYTES {
                return Err(format!("{source}: metadata larger than {MAX_METADATA_BYTES} bytes"));
            }
        }
        return String::from_utf8(body).map_err(|_| format!("{source}: metadata is not UTF-8"));
    }
    std::fs::read_to_string(source).map_err(|e| format!("{source}: {e}"))
}

async fn sp(config: &Config, command: SpCommand) -> Result<(), String> {
    let directory = directory(config).await?;
    match command {
        SpCommand::Add { source, name } => {
            let xml = fetch_metadata(&source).await?;
            let entities = parse_sp_metadata(xml.as_bytes(), Utc::now()).map_err(|e| format!("{source}: {e}"))?;
            for entity in entities {
                let sp = directory
                    .add_sp(NewServiceProvider {
                        entity_id: entity.entity_id.clone(),
                        metadata_xml: xml.clone(),
                        display_name: name.clone().unwrap_or_else(|| entity.entity_id.clone()),
                        settings: SpSettings::default(),
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                println!("registered {}", sp.entity_id);
            }
        }
        SpCommand::List => {
            for sp in directory.list_sps().await.map_err(|e| e.to_string())? {
                let state = if sp.settings.enabled { "enabled" } else { "disabled" };
                println!("{}\t{}\t{}", sp.entity_id, state, sp.display_name);
            }
        }
        SpCommand::Show { entity_id } => {
            let sp = directory
                .get_sp(&entity_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("service provider {entity_id:?} not found"))?;
            let parsed = parse_sp_metadata(sp.metadata_xml.as_bytes(), Utc::now()).map_err(|e| e.to_string())?;
            println!("entityID:       {}", sp.entity_id);
            println!("display name:   {}", sp.display_name);
            println!("enabled:        {}", sp.settings.enabled);
            println!("NameID format:  {} (from {})", sp.settings.nameid_format, sp.settings.nameid_attribute);
            println!("signs:          assertion={} response={}", sp.settings.sign_assertion, sp.settings.sign_response);
            println!("encryption:     {}", sp.settings.encrypt_assertion);
            if let Some(m) = parsed.iter().find(|m| m.entity_id == sp.entity_id) {
                for acs in &m.acs {
                    println!("ACS:            {} {}", acs.binding, acs.location);
                }
                println!("signed requests required: {}", m.authn_requests_signed);
            }
        }
        SpCommand::Remove { entity_id } => {
            directory.remove_sp(&entity_id).await.map_err(|e| e.to_string())?;
            println!("removed {entity_id}");
        }
        SpCommand::Assign { entity_id, username } => {
            directory.assign_app(&username, &entity_id).await.map_err(|e| e.to_string())?;
            println!("assigned {entity_id} to {username}");
        }
    }
    Ok(())
}

fn keys(config: &Config, command: KeysCommand) -> Result<(), String> {
    let kind = |ec: bool| if ec { KeyKind::EcP256 } else { KeyKind::Rsa2048 };
    let dir = &config.certs_dir;
    match command {
        KeysCommand::Generate { ec, force } => {
            if KeyRing::generate(dir, kind(ec), &config.entity_id(), Utc::now(), force).map_err(|e| e.to_string())? {
                println!("generated {}", dir.join("signing.key").display());
            } else {
                println!("a signing key already exists in {} (use --force to replace it)", dir.display());
            }
        }
        KeysCommand::Rotate { ec } => match KeyRing::rotate(dir, kind(ec), &config.entity_id(), Utc::now()).map_err(|e| e.to_string())? {
            RotateStep::NextPublished => {
                println!("next key created and published in metadata; run `keys rotate` again once SPs refreshed")
            }
            RotateStep::NextPromoted => println!("the next key now signs; restart Tessera to use it"),
        },
        KeysCommand::List => {
            let ring = KeyRing::load(dir).map_err(|e| e.to_string())?;
            for (label, key) in std::iter::once(("current", &ring.current)).chain(ring.next.iter().map(|k| ("next", k))) {
                let cert = key.certificate();
                let digest = cert.digest(openssl::hash::MessageDigest::sha256()).map_err(|e| e.to_string())?;
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
