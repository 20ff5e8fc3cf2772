//! `tessera assignment-rule ...`: conditional app assignment rules (grant SPs to users by attribute,
//! group and role), and which apps a user gets and why.

use clap::{Args, Subcommand};

use tessera::directory::Directory;
use tessera::policy::{AssignmentRule, Combine, Condition};

#[derive(Subcommand)]
pub enum AssignmentRuleCommand {
    /// Add a rule: users matching the condition get the SPs.
    ///
    /// Example: add sales --when department=Sales --when group=sales-emea --any --sp https://crm
    Add(RuleArgs),
    /// Replace a rule's condition, SPs and state.
    Update(RuleArgs),
    /// List rules: name, state, condition, SPs.
    List,
    /// Show one rule.
    Show { name: String },
    /// Remove a rule.
    Remove { name: String },
    /// Turn a rule back on.
    Enable { name: String },
    /// Turn a rule off without removing it.
    Disable { name: String },
    /// The apps a user gets, and why (direct assignment or rule names).
    Apps { username: String },
}

#[derive(Args)]
pub struct RuleArgs {
    /// The rule's name.
    name: String,
    /// A condition (repeat): `group=NAME`, `role=NAME`, `ATTRIBUTE=VALUE` or `ATTRIBUTE=V1|V2` (one of,
    /// case-insensitive); join several with `&` for all of them, e.g. `department=Sales & role=manager`.
    #[arg(long = "when", required = true)]
    whens: Vec<String>,
    /// Several --when: any one must hold.
    #[arg(long, conflicts_with = "all")]
    any: bool,
    /// Several --when: all must hold.
    #[arg(long)]
    all: bool,
    /// An SP granted, by entityID (repeat).
    #[arg(long = "sp", required = true)]
    sps: Vec<String>,
    /// Store the rule disabled.
    #[arg(long)]
    disabled: bool,
}

impl RuleArgs {
    /// The rule these arguments describe.
    fn rule(self) -> Result<AssignmentRule, String> {
        let combine = match (self.any, self.all) {
            (true, _) => Some(Combine::Any),
            (_, true) => Some(Combine::All),
            _ => None,
        };
        Ok(AssignmentRule {
            condition: Condition::from_when(&self.whens, combine)?,
            name: self.name,
            targets: self.sps,
            enabled: !self.disabled,
        })
    }
}

/// Prints one rule on one line.
fn line(rule: &AssignmentRule) -> String {
    format!(
        "{}\t{}\t{}\t{}",
        rule.name,
        if rule.enabled { "enabled" } else { "disabled" },
        rule.condition,
        rule.targets.join(", ")
    )
}

/// Runs one `assignment-rule` command.
pub async fn run(directory: &Directory, command: AssignmentRuleCommand) -> Result<(), String> {
    let err = |e: tessera::directory::Error| e.to_string();
    match command {
        AssignmentRuleCommand::Add(args) => {
            let rule = args.rule()?;
            directory.add_assignment_rule(&rule).await.map_err(err)?;
            println!("added assignment rule {}: {}", rule.name, rule.condition);
        }
        AssignmentRuleCommand::Update(args) => {
            let rule = args.rule()?;
            directory.update_assignment_rule(&rule).await.map_err(err)?;
            println!("updated assignment rule {}: {}", rule.name, rule.condition);
        }
        AssignmentRuleCommand::List => {
            for rule in directory.list_assignment_rules().await.map_err(err)? {
                println!("{}", line(&rule));
            }
        }
        AssignmentRuleCommand::Show { name } => {
            let rule = directory
                .get_assignment_rule(&name)
                .await
                .map_err(err)?
                .ok_or_else(|| format!("assignment rule {name:?} not found"))?;
            println!("name:      {}", rule.name);
            println!("enabled:   {}", rule.enabled);
            if let Some(owner) = directory.assignment_rule_owner(&name).await.map_err(err)? {
                println!("managed:   {owner}");
            }
            println!("condition: {}", rule.condition);
            for sp in &rule.targets {
                let known = directory.get_sp(sp).await.map_err(err)?.is_some();
                let note = if known { "" } else { " (not registered)" };
                println!("grants:    {sp}{note}");
            }
        }
        AssignmentRuleCommand::Remove { name } => {
            directory.remove_assignment_rule(&name).await.map_err(err)?;
            println!("removed assignment rule {name}");
        }
        AssignmentRuleCommand::Enable { name } => {
            let changed = directory
                .set_assignment_rule_enabled(&name, true)
                .await
                .map_err(err)?;
            let note = if changed { "" } else { " (already)" };
            println!("enabled assignment rule {name}{note}");
        }
        AssignmentRuleCommand::Disable { name } => {
            let changed = directory
                .set_assignment_rule_enabled(&name, false)
                .await
                .map_err(err)?;
            let note = if changed { "" } else { " (already)" };
            println!("disabled assignment rule {name}{note}");
        }
        AssignmentRuleCommand::Apps { username } => {
            let user = directory
                .get_user_by_username(&username)
                .await
                .map_err(err)?
                .ok_or_else(|| format!("user {username:?} not found"))?;
            let rules = directory.load_rule_set().await.map_err(err)?;
            for app in directory.app_access(&user, &rules).await.map_err(err)? {
                let mut why: Vec<String> = Vec::new();
                if app.direct {
                    why.push("direct".to_owned());
                }
                why.extend(app.rules.iter().map(|r| format!("rule {r}")));
                let state = if app.enabled { "" } else { " (SP disabled)" };
                println!("{}\t{}{state}", app.entity_id, why.join(", "));
            }
        }
    }
    Ok(())
}
