//! `tessera admin ...` and `tessera token ...`: bootstrapping delegated administration from the
//! console (the first super admin, and the first API token, cannot come from the API itself).

use chrono::Utc;
use clap::Subcommand;

use tessera::directory::{AdminRole, AuditEntry, Directory, TokenScope};
use tessera::policy::IpRange;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Grant an admin role (super_admin, org_admin, app_admin --sp <entityID>, helpdesk).
    Grant {
        username: String,
        role: AdminRole,
        /// The SP an app admin administers.
        #[arg(long)]
        sp: Option<String>,
    },
    /// Revoke an admin role.
    Revoke {
        username: String,
        role: AdminRole,
        #[arg(long)]
        sp: Option<String>,
    },
    /// List admin grants.
    List,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token for an admin; the token is printed once and cannot be shown again.
    Create {
        /// The admin the token acts as.
        #[arg(long)]
        owner: String,
        /// A label for listings.
        #[arg(long, default_value = "cli")]
        name: String,
        /// read or write.
        #[arg(long, default_value = "read")]
        scope: TokenScope,
        /// Lifetime in days.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
        expires_days: u32,
        /// A range the token may be used from (repeat); the owner's IP allowlists apply too.
        #[arg(long = "ip")]
        ranges: Vec<IpRange>,
    },
    /// List tokens (never the tokens themselves).
    List {
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Revoke a token by id.
    Revoke { id: i64 },
}

/// Records a console change in the admin audit trail.
async fn audit(
    directory: &Directory,
    action: &str,
    target: &str,
    after: Option<String>,
    before: Option<String>,
) -> Result<(), String> {
    directory
        .record_admin_change(&AuditEntry {
            at: 0,
            actor: "console".to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            before,
            after,
            client_ip: String::new(),
        })
        .await
        .map_err(|e| e.to_string())
}

pub async fn admin(directory: &Directory, command: AdminCommand) -> Result<(), String> {
    match command {
        AdminCommand::Grant { username, role, sp } => {
            let grant = directory
                .grant_admin(&username, role, sp.as_deref(), "console")
                .await
                .map_err(|e| e.to_string())?;
            let record =
                serde_json::json!({ "id": grant.id, "role": role.as_str(), "sp": grant.sp });
            audit(
                directory,
                "grant.create",
                &format!("user:{username}"),
                Some(record.to_string()),
                None,
            )
            .await?;
            match &grant.sp {
                Some(sp) => println!("granted {role} for {sp} to {username} (grant {})", grant.id),
                None => println!("granted {role} to {username} (grant {})", grant.id),
            }
        }
        AdminCommand::Revoke { username, role, sp } => {
            let grants = directory
                .list_admin_grants()
                .await
                .map_err(|e| e.to_string())?;
            let grant = grants
                .into_iter()
                .find(|g| g.username == username && g.role == role && g.sp == sp)
                .ok_or_else(|| format!("{username} does not hold {role}"))?;
            directory
                .revoke_admin_grant(grant.id)
                .await
                .map_err(|e| e.to_string())?;
            let record =
                serde_json::json!({ "id": grant.id, "role": role.as_str(), "sp": grant.sp });
            audit(
                directory,
                "grant.revoke",
                &format!("user:{username}"),
                None,
                Some(record.to_string()),
            )
            .await?;
            println!("revoked {role} from {username}");
        }
        AdminCommand::List => {
            for g in directory
                .list_admin_grants()
                .await
                .map_err(|e| e.to_string())?
            {
                println!(
                    "{}\t{}\t{}\t{}\tgranted by {}",
                    g.id,
                    g.username,
                    g.role,
                    g.sp.as_deref().unwrap_or("-"),
                    g.granted_by
                );
            }
        }
    }
    Ok(())
}

pub async fn token(directory: &Directory, command: TokenCommand) -> Result<(), String> {
    match command {
        TokenCommand::Create {
            owner,
            name,
            scope,
            expires_days,
            ranges,
        } => {
            let user = directory
                .get_user_by_username(&owner)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("user {owner:?} not found"))?;
            let grants = directory
                .admin_grants_of(user.id)
                .await
                .map_err(|e| e.to_string())?;
            if grants.is_empty() {
                return Err(format!(
                    "{owner} holds no admin role, so a token would be refused; grant one first (tessera admin grant)"
                ));
            }
            let expires_at = Utc::now().timestamp() + i64::from(expires_days) * 86_400;
            let ranges = (!ranges.is_empty()).then_some(ranges);
            let (token, secret) = directory
                .create_api_token(&owner, &name, scope, expires_at, ranges.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            let record = serde_json::json!({ "id": token.id, "owner": owner, "scope": scope.as_str(), "expires_at": expires_at });
            audit(
                directory,
                "token.create",
                &format!("token:{}", token.id),
                Some(record.to_string()),
                None,
            )
            .await?;
            eprintln!(
                "token {} for {owner} ({}), expires in {expires_days} days; it is shown only now:",
                token.id,
                scope.as_str()
            );
            println!("{secret}");
        }
        TokenCommand::List { owner } => {
            let owner_id = match owner {
                Some(name) => Some(
                    directory
                        .get_user_by_username(&name)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("user {name:?} not found"))?
                        .id,
                ),
                None => None,
            };
            for t in directory
                .list_api_tokens(owner_id)
                .await
                .map_err(|e| e.to_string())?
            {
                let ranges = t.ip_ranges.map_or("-".to_owned(), |r| {
                    r.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                println!(
                    "{}\t{}\t{}\t{}\texpires {}\tranges {}",
                    t.id,
                    t.owner,
                    t.name,
                    t.scope.as_str(),
                    chrono::DateTime::from_timestamp(t.expires_at, 0)
                        .map_or_else(|| t.expires_at.to_string(), |d| d.to_rfc3339()),
                    ranges
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !directory
                .revoke_api_token(id)
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no token {id}"));
            }
            audit(
                directory,
                "token.revoke",
                &format!("token:{id}"),
                None,
                None,
            )
            .await?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}
