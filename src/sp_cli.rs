//! `tessera sp add|set|refresh` and the registration part of `sp show`: registering SPs from a file or
//! a URL, editing their settings (all given changes applied together or none), refreshing metadata
//! fetched from a URL.

use std::path::PathBuf;

use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};
use tessera::config::Config;
use tessera::directory::{
    AttributeRelease, Directory, MetadataSource, ServiceProvider, SpProfile, ATTRNAME_FORMAT_BASIC,
    ATTRNAME_FORMAT_UNSPECIFIED, ATTRNAME_FORMAT_URI, NAMEID_FORMAT_EMAIL,
    NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT, NAMEID_FORMAT_UNSPECIFIED,
};
use tessera::sp_registration::{self, FetchLimits, UrlRegistration};

/// `tessera sp add`'s arguments.
#[derive(Args)]
pub struct AddArgs {
    /// The metadata: a file path, or an http(s) URL (remembered, so it can be refreshed).
    pub source: String,
    /// Name shown on the portal (defaults to the entityID).
    #[arg(long)]
    pub name: Option<String>,
    /// Logo shown on the portal (an https URL).
    #[arg(long)]
    pub logo_url: Option<String>,
    /// PEM certificate the metadata must be signed with (kept for refreshes of a URL source).
    #[arg(long, value_name = "FILE")]
    pub pin_cert: Option<PathBuf>,
    /// Refresh the metadata from the URL every this many seconds (URL sources only).
    #[arg(long)]
    pub refresh_secs: Option<i64>,
}

/// Which parts of what Tessera sends are signed.
#[derive(Clone, Copy, ValueEnum)]
pub enum SignTarget {
    Assertion,
    Response,
    Both,
}

/// On or off.
#[derive(Clone, Copy, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// The commands flattened into `tessera sp`.
#[derive(Subcommand)]
pub enum SpRegistrationCommand {
    /// Change an SP's settings. Only what is given changes; all of it is applied, or nothing.
    Set(Box<SetArgs>),
    /// Fetch again the metadata of an SP registered from a URL (all such SPs when none is named).
    /// A failure keeps the last good metadata and is recorded (`sp show`).
    Refresh { entity_id: Option<String> },
}

/// `tessera sp set`'s arguments.
#[derive(Args)]
pub struct SetArgs {
    pub entity_id: String,
    /// Name shown on the portal.
    #[arg(long)]
    pub display_name: Option<String>,
    /// Logo shown on the portal (an https URL).
    #[arg(long, conflicts_with = "no_logo")]
    pub logo_url: Option<String>,
    /// Remove the logo.
    #[arg(long)]
    pub no_logo: bool,
    /// NameID format: unspecified, email, persistent, transient, or a format URI.
    #[arg(long)]
    pub nameid_format: Option<String>,
    /// The user attribute the NameID value comes from (username, email, id, or an extra attribute).
    #[arg(long)]
    pub nameid_attribute: Option<String>,
    /// What is signed: the assertion, the response, or both.
    #[arg(long, value_enum)]
    pub sign: Option<SignTarget>,
    /// Encrypt the assertion (needs an encryption key in the SP's metadata).
    #[arg(long, value_enum)]
    pub encrypt: Option<Switch>,
    /// Let the SP be used.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Refuse the SP at the SSO endpoint and hide it from the portal.
    #[arg(long)]
    pub disable: bool,
    /// Release a user attribute: `ATTR=SAML_NAME[;friendly=NAME][;format=uri|basic|unspecified|URI]`
    /// (repeat). Any --release* option replaces the whole release list.
    #[arg(long = "release", value_name = "RULE")]
    pub release: Vec<String>,
    /// Release a fixed value to every user: `SAML_NAME=VALUE` (repeat; repeating a name adds values).
    #[arg(long = "release-static", value_name = "NAME=VALUE")]
    pub release_static: Vec<String>,
    /// Release the user's group names under this SAML name.
    #[arg(long, value_name = "SAML_NAME")]
    pub release_groups: Option<String>,
    /// Release the user's role names under this SAML name.
    #[arg(long, value_name = "SAML_NAME")]
    pub release_roles: Option<String>,
    /// Release nothing.
    #[arg(long, conflicts_with_all = ["release", "release_static", "release_groups", "release_roles"])]
    pub release_none: bool,
    /// Fetch the metadata from this http(s) URL (now, and at each refresh).
    #[arg(long, conflicts_with = "no_metadata_url")]
    pub metadata_url: Option<String>,
    /// Forget the metadata URL: the stored metadata stays and is no longer refreshed.
    #[arg(long)]
    pub no_metadata_url: bool,
    /// Refresh the metadata from its URL every this many seconds; 0: only on `sp refresh`.
    #[arg(long)]
    pub refresh_secs: Option<i64>,
    /// PEM certificate the metadata fetched from the URL must be signed with.
    #[arg(long, value_name = "FILE", conflicts_with = "no_pin")]
    pub pin_cert: Option<PathBuf>,
    /// Stop requiring a signature on the fetched metadata.
    #[arg(long)]
    pub no_pin: bool,
}

fn read_pem(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `tessera sp add`: from a file (an upload) or from a URL.
pub async fn add(config: &Config, directory: &Directory, args: AddArgs) -> Result<(), String> {
    let now = Utc::now();
    let is_url = args.source.contains("://");
    let registered = if is_url {
        let registration = UrlRegistration {
            url: args.source.clone(),
            display_name: args.name,
            logo_url: args.logo_url,
            pinned_cert: args.pin_cert.as_ref().map(read_pem).transpose()?,
            refresh_secs: args.refresh_secs,
        };
        let limits = FetchLimits::from_config(&config.sp_metadata);
        sp_registration::register_from_url(directory, &registration, &limits, now)
            .await
            .map_err(|e| format!("{}: {e}", args.source))?
    } else {
        if args.refresh_secs.is_some() {
            return Err("--refresh-secs needs a metadata URL".to_owned());
        }
        let xml =
            std::fs::read_to_string(&args.source).map_err(|e| format!("{}: {e}", args.source))?;
        // A file may be checked against a pinned certificate too (once: there is nothing to refresh).
        if let Some(path) = &args.pin_cert {
            sp_registration::check_metadata(&xml, Some(&read_pem(path)?), now)
                .map_err(|e| format!("{}: {e}", args.source))?;
        }
        // Checked before registering, so a bad logo registers nothing.
        if let Some(logo) = &args.logo_url {
            SpProfile {
                display_name: "-".to_owned(),
                logo_url: Some(logo.clone()),
                settings: Default::default(),
                source: None,
            }
            .validate()
            .map_err(|e| e.to_string())?;
        }
        let sps = sp_registration::register_from_xml(directory, &xml, args.name.as_deref(), now)
            .await
            .map_err(|e| format!("{}: {e}", args.source))?;
        if let Some(logo) = &args.logo_url {
            for sp in &sps {
                let profile = SpProfile {
                    logo_url: Some(logo.clone()),
                    ..SpProfile::of(sp)
                };
                directory
                    .update_sp_profile(&sp.entity_id, &profile, None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        sps
    };
    for sp in registered {
        println!("registered {}", sp.entity_id);
    }
    Ok(())
}

/// Parses `--nameid-format`.
fn nameid_format(value: &str) -> Result<String, String> {
    Ok(match value {
        "unspecified" => NAMEID_FORMAT_UNSPECIFIED.to_owned(),
        "email" => NAMEID_FORMAT_EMAIL.to_owned(),
        "persistent" => NAMEID_FORMAT_PERSISTENT.to_owned(),
        "transient" => NAMEID_FORMAT_TRANSIENT.to_owned(),
        uri if uri.starts_with("urn:") => uri.to_owned(),
        other => {
            return Err(format!(
            "NameID format {other:?}: use unspecified, email, persistent, transient or a urn: URI"
        ))
        }
    })
}

/// The NameFormat for a SAML attribute name: URI names (`urn:oid:...`, `http://...`) are uri, others
/// basic (saml-core 8.2.2, 8.2.3).
fn name_format_for(name: &str) -> String {
    if name.contains(':') {
        ATTRNAME_FORMAT_URI.to_owned()
    } else {
        ATTRNAME_FORMAT_BASIC.to_owned()
    }
}

/// Parses one `--release` rule.
fn release_rule(text: &str) -> Result<AttributeRelease, String> {
    let mut parts = text.split(';');
    let head = parts.next().unwrap_or_default();
    let (attribute, saml_name) = head
        .split_once('=')
        .filter(|(a, n)| !a.trim().is_empty() && !n.trim().is_empty())
        .ok_or_else(|| format!("--release {text:?}: expected ATTR=SAML_NAME"))?;
    let mut rule = AttributeRelease::new(attribute.trim(), saml_name.trim());
    rule.name_format = name_format_for(saml_name.trim());
    for option in parts {
        match option.split_once('=') {
            Some(("friendly", name)) if !name.is_empty() => {
                rule.friendly_name = Some(name.to_owned())
            }
            Some(("format", format)) => {
                rule.name_format = match format {
                    "uri" => ATTRNAME_FORMAT_URI.to_owned(),
                    "basic" => ATTRNAME_FORMAT_BASIC.to_owned(),
                    "unspecified" => ATTRNAME_FORMAT_UNSPECIFIED.to_owned(),
                    uri if uri.starts_with("urn:") => uri.to_owned(),
                    other => return Err(format!("--release {text:?}: unknown format {other:?}")),
                }
            }
            _ => {
                return Err(format!(
                    "--release {text:?}: unknown option {option:?} (friendly=NAME or format=...)"
                ))
            }
        }
    }
    Ok(rule)
}

/// The release list given by the `--release*` options, or `None` when none was given.
fn release_list(args: &SetArgs) -> Result<Option<Vec<AttributeRelease>>, String> {
    if args.release_none {
        return Ok(Some(Vec::new()));
    }
    if args.release.is_empty()
        && args.release_static.is_empty()
        && args.release_groups.is_none()
        && args.release_roles.is_none()
    {
        return Ok(None);
    }
    let mut rules = args
        .release
        .iter()
        .map(|r| release_rule(r))
        .collect::<Result<Vec<_>, _>>()?;
    for text in &args.release_static {
        let (name, value) = text
            .split_once('=')
            .filter(|(n, _)| !n.trim().is_empty())
            .ok_or_else(|| format!("--release-static {text:?}: expected SAML_NAME=VALUE"))?;
        let name = name.trim();
        match rules
            .iter_mut()
            .find(|r| r.saml_name == name && !r.static_values.is_empty())
        {
            Some(rule) => rule.static_values.push(value.to_owned()),
            None => {
                let mut rule = AttributeRelease::fixed(name, vec![value.to_owned()]);
                rule.name_format = name_format_for(name);
                rules.push(rule);
            }
        }
    }
    for (attribute, name) in [
        ("groups", &args.release_groups),
        ("roles", &args.release_roles),
    ] {
        if let Some(name) = name {
            let mut rule = AttributeRelease::new(attribute, name.trim());
            rule.name_format = name_format_for(name);
            rules.push(rule);
        }
    }
    Ok(Some(rules))
}

/// The profile `args` make of `sp`'s current one.
fn edited(sp: &ServiceProvider, args: &SetArgs) -> Result<SpProfile, String> {
    let mut p = SpProfile::of(sp);
    if let Some(name) = &args.display_name {
        p.display_name = name.clone();
    }
    if args.no_logo {
        p.logo_url = None;
    } else if let Some(logo) = &args.logo_url {
        p.logo_url = Some(logo.clone());
    }
    let s = &mut p.settings;
    if let Some(format) = &args.nameid_format {
        s.nameid_format = nameid_format(format)?;
    }
    if let Some(attribute) = &args.nameid_attribute {
        s.nameid_attribute = attribute.clone();
    }
    if let Some(target) = args.sign {
        (s.sign_assertion, s.sign_response) = match target {
            SignTarget::Assertion => (true, false),
            SignTarget::Response => (false, true),
            SignTarget::Both => (true, true),
        };
    }
    if let Some(encrypt) = args.encrypt {
        s.encrypt_assertion = matches!(encrypt, Switch::On);
    }
    if args.enable {
        s.enabled = true;
    }
    if args.disable {
        s.enabled = false;
    }
    if let Some(rules) = release_list(args)? {
        s.attribute_release = rules;
    }
    if args.no_metadata_url {
        if args.refresh_secs.is_some() || args.pin_cert.is_some() {
            return Err("--refresh-secs and --pin-cert need a metadata URL".to_owned());
        }
        p.source = None;
    } else {
        let touches_source =
            args.metadata_url.is_some() || args.refresh_secs.is_some() || args.pin_cert.is_some();
        let mut source = match (p.source.take(), &args.metadata_url) {
            (_, Some(url)) => Some(MetadataSource {
                url: url.clone(),
                pinned_cert: p_source_pin(sp),
                refresh_secs: sp.source.as_ref().and_then(|s| s.refresh_secs),
            }),
            (Some(existing), None) => Some(existing),
            (None, None) if touches_source || args.no_pin => {
                return Err(format!(
                    "{} has no metadata URL: give --metadata-url",
                    sp.entity_id
                ))
            }
            (None, None) => None,
        };
        if let Some(source) = &mut source {
            if let Some(secs) = args.refresh_secs {
                source.refresh_secs = (secs != 0).then_some(secs);
            }
            if args.no_pin {
                source.pinned_cert = None;
            } else if let Some(path) = &args.pin_cert {
                source.pinned_cert = Some(read_pem(path)?);
            }
        }
        p.source = source;
    }
    Ok(p)
}

/// The pin an SP has now, kept when only its URL changes.
fn p_source_pin(sp: &ServiceProvider) -> Option<String> {
    sp.source.as_ref().and_then(|s| s.pinned_cert.clone())
}

/// `tessera sp set` and `tessera sp refresh`.
pub async fn run(
    config: &Config,
    directory: &Directory,
    command: SpRegistrationCommand,
) -> Result<(), String> {
    let limits = FetchLimits::from_config(&config.sp_metadata);
    match command {
        SpRegistrationCommand::Set(args) => {
            let sp = directory
                .get_sp(&args.entity_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("service provider {:?} not found", args.entity_id))?;
            let profile = edited(&sp, &args)?;
            if profile == SpProfile::of(&sp) {
                return Err("nothing to change: give at least one option (see --help)".to_owned());
            }
            sp_registration::update_sp(directory, &sp.entity_id, &profile, &limits, Utc::now())
                .await
                .map_err(|e| e.to_string())?;
            println!("updated {}", sp.entity_id);
        }
        SpRegistrationCommand::Refresh { entity_id } => {
            let targets = match entity_id {
                Some(id) => vec![id],
                None => directory
                    .list_sps()
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|sp| sp.source.is_some())
                    .map(|sp| sp.entity_id)
                    .collect(),
            };
            let mut failed = 0usize;
            for id in &targets {
                match sp_registration::refresh_sp(directory, id, &limits, Utc::now()).await {
                    Ok(outcome) => println!("{id}: {outcome:?}"),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{id}: refresh failed, keeping the last good metadata: {e}");
                    }
                }
            }
            if failed > 0 {
                return Err(format!("{failed} of {} refreshes failed", targets.len()));
            }
        }
    }
    Ok(())
}

/// The registration lines of `tessera sp show`.
pub fn show(sp: &ServiceProvider) {
    let time = |t: Option<i64>| {
        t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map_or("-".to_owned(), |t| {
                t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
            })
    };
    println!("logo:           {}", sp.logo_url.as_deref().unwrap_or("-"));
    for rule in &sp.settings.attribute_release {
        let what = if rule.static_values.is_empty() {
            rule.user_attribute.clone()
        } else {
            format!("static {:?}", rule.static_values)
        };
        println!(
            "releases:       {} as {} ({})",
            what, rule.saml_name, rule.name_format
        );
    }
    match &sp.source {
        None => println!("metadata from:  upload or metadata/ folder"),
        Some(source) => {
            println!("metadata from:  {}", source.url);
            println!(
                "signature pin:  {}",
                if source.pinned_cert.is_some() {
                    "pinned certificate"
                } else {
                    "none"
                }
            );
            println!(
                "refresh every:  {}",
                source
                    .refresh_secs
                    .map_or("on request".to_owned(), |s| format!("{s}s"))
            );
            println!("last refresh:   {}", time(sp.refresh.last_attempt_at));
            println!("last success:   {}", time(sp.refresh.last_success_at));
            if let Some(error) = &sp.refresh.last_error {
                println!("last error:     {error}");
            }
        }
    }
}
