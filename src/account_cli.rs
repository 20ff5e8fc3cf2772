//! `tessera user ...` commands about credentials and the account's existence: delete, set-password,
//! reset-link, unlock-recovery. Each one that changes what the user can prove ends their sessions: at
//! once when they are in Redis, and in any case at their next request (memory sessions live in the
//! server, out of the CLI's reach, but every SSO checks the directory).

use std::time::Duration;

use clap::Subcommand;
use tessera::config::{Config, SessionBackend};
use tessera::directory::{Directory, LoginEvent};
use tessera::session::{RedisStore, SessionStore};

/// The commands, flattened into `tessera user`.
#[derive(Subcommand)]
pub enum AccountCommand {
    /// Delete a user (memberships, factors and answers go with it); their sessions end.
    Delete { username: String },
    /// Set a user's password (read from standard input, one line); their sessions end.
    SetPassword {
        username: String,
        /// Make the user choose a new password at their next sign-in.
        #[arg(long)]
        must_change: bool,
    },
    /// Print a single-use link with which the user sets a new password (after their second factor, if
    /// they have one).
    ResetLink {
        username: String,
        /// How long the link works, in minutes (default: `recovery.link_valid_minutes`).
        #[arg(long)]
        valid_minutes: Option<u64>,
        /// The administrator issuing it, for the record.
        #[arg(long)]
        by: Option<String>,
    },
    /// Lift the lock that repeated failed recovery attempts put on a user (Redis sessions only; the
    /// admin API's `POST /api/v1/users/{username}/unlock` works with any backend).
    UnlockRecovery { username: String },
}

/// The shared session store, when the sessions are in Redis.
async fn redis(config: &Config) -> Result<Option<RedisStore>, String> {
    match config.session.backend {
        SessionBackend::Memory => Ok(None),
        SessionBackend::Redis => {
            RedisStore::connect(&config.session.redis_url, &config.session.key_prefix)
                .await
                .map(Some)
                .map_err(|e| e.to_string())
        }
    }
}

/// Ends every session of `user_id`: at once when they are in Redis, and in any case at their next
/// request (the directory records that sessions begun before now are over). Says what happened.
pub async fn end_sessions(
    config: &Config,
    directory: &Directory,
    user_id: i64,
    username: &str,
) -> Result<(), String> {
    match directory.revoke_sessions(username).await {
        Ok(()) | Err(tessera::directory::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.to_string()),
    }
    match redis(config).await? {
        Some(store) => {
            let ended = store
                .delete_user_sessions(user_id)
                .await
                .map_err(|e| e.to_string())?;
            println!("ended {ended} session(s) of {username}");
        }
        None => println!("{username}'s sessions end at their next request"),
    }
    Ok(())
}

/// Records an administrator's action on a user as a login event.
async fn record(
    directory: &Directory,
    username: &str,
    user_id: i64,
    outcome: &str,
    reason: &str,
) -> Result<(), String> {
    directory
        .record_login_event(&LoginEvent {
            at: 0,
            username: username.to_owned(),
            user_id: Some(user_id),
            ip: "console".to_owned(),
            sp: None,
            outcome: outcome.to_owned(),
            reason: reason.to_owned(),
        })
        .await
        .map_err(|e| e.to_string())
}

/// Runs one command.
pub async fn run(
    config: &Config,
    directory: &Directory,
    command: AccountCommand,
    read_password: impl FnOnce() -> Result<String, String>,
) -> Result<(), String> {
    let find = |username: &str| {
        let username = username.to_owned();
        async move {
            directory
                .get_user_by_username(&username)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("user {username:?} not found"))
        }
    };
    match command {
        AccountCommand::Delete { username } => {
            let user = find(&username).await?;
            directory
                .delete_user(&username)
                .await
                .map_err(|e| e.to_string())?;
            println!("deleted user {username}");
            end_sessions(config, directory, user.id, &username).await?;
            record(
                directory,
                &username,
                user.id,
                "user_deleted",
                "deleted by an administrator",
            )
            .await?;
        }
        AccountCommand::SetPassword {
            username,
            must_change,
        } => {
            let user = find(&username).await?;
            let password = read_password()?;
            directory
                .set_password(&username, &password)
                .await
                .map_err(|e| e.to_string())?;
            if must_change {
                directory
                    .set_password_must_change(&username, true)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            println!(
                "set the password of {username}{}",
                if must_change {
                    "; it must be changed at the next sign-in"
                } else {
                    ""
                }
            );
            end_sessions(config, directory, user.id, &username).await?;
            record(
                directory,
                &username,
                user.id,
                "password_reset",
                "set by an administrator",
            )
            .await?;
        }
        AccountCommand::ResetLink {
            username,
            valid_minutes,
            by,
        } => {
            let user = find(&username).await?;
            let minutes = valid_minutes.unwrap_or(config.recovery.link_valid_minutes);
            if minutes == 0 || minutes > 7 * 24 * 60 {
                return Err("--valid-minutes must be between 1 and 10080 (a week)".to_owned());
            }
            let by = by
                .filter(|b| !b.trim().is_empty())
                .unwrap_or_else(|| "console".to_owned());
            let token = directory
                .create_reset_token(&username, &by, Duration::from_secs(minutes * 60))
                .await
                .map_err(|e| e.to_string())?;
            record(
                directory,
                &username,
                user.id,
                "reset_link_issued",
                &format!("by {by}, valid {minutes} min"),
            )
            .await?;
            println!("{}/recover/link?token={token}", config.base());
            eprintln!("single use, valid for {minutes} minute(s); give it to {username} only");
        }
        AccountCommand::UnlockRecovery { username } => {
            let Some(store) = redis(config).await? else {
                return Err(
                    "recovery locks are in the server's memory; they end by themselves, or lift \
                     them with POST /api/v1/users/NAME/unlock (or the console's Unlock button)"
                        .to_owned(),
                );
            };
            tessera::web::unlock_recovery(&store, &username)
                .await
                .map_err(|e| e.to_string())?;
            println!("recovery unlocked for {username}");
        }
    }
    Ok(())
}
