//! Console pages for the access policy: IP allowlist rules, security policies and their assignments.
//! A change that would lock the acting admin out is refused by the API unless the form's "apply
//! anyway" box is ticked (the API's `?confirm=true`).

use askama::Template;
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{items, optional, segment, Console, Flash, Layout, Section};
use crate::web::forms::CheckedForm;

/// An IP rule as the API lists it.
#[derive(Deserialize)]
struct IpRuleRow {
    name: String,
    ranges: Vec<String>,
    applies_to: String,
    names: Vec<String>,
    managed_by: String,
}

#[derive(Template)]
#[template(path = "admin_ip_rules.html")]
struct IpRulesPage {
    l: Layout,
    rules: Vec<IpRuleRow>,
}

/// Body of `POST /admin/ip-rules`.
#[derive(Deserialize)]
pub struct IpRuleForm {
    /// The page's double-submit token (missing: refused like a wrong one).
    #[serde(default)]
    csrf_token: String,
    /// `create` or `delete`.
    #[serde(default)]
    op: String,
    #[serde(default)]
    name: String,
    /// CIDR, addresses or `from-to`, separated by commas, spaces or lines.
    #[serde(default)]
    ranges: String,
    /// `everyone`, `roles`, `groups` or `users`.
    #[serde(default)]
    applies_to: String,
    /// The roles, groups or users.
    #[serde(default)]
    names: String,
    /// "Apply even if it locks me out".
    confirm: Option<String>,
}

/// `?confirm=true` when the box is ticked.
fn confirm_query(confirm: &Option<String>) -> &'static str {
    if confirm.is_some() {
        "?confirm=true"
    } else {
        ""
    }
}

async fn ip_rules_page(console: Console, flash: Flash) -> Response {
    if let Err(denied) = console.require(Section::IpRules).await {
        return denied;
    }
    let (rules, flash) = console.list::<IpRuleRow>("/ip-rules", flash).await;
    let page = IpRulesPage {
        l: console.layout(Section::IpRules, &flash).await,
        rules,
    };
    console.page(&page, &flash)
}

/// `GET /admin/ip-rules`.
pub async fn ip_rules(console: Console) -> Response {
    ip_rules_page(console, Flash::default()).await
}

/// `POST /admin/ip-rules`: add or remove a rule, through the API (lockout preview included).
pub async fn ip_rules_submit(
    console: Console,
    CheckedForm(form): CheckedForm<IpRuleForm>,
) -> Response {
    let name = form.name.trim();
    let token = form.csrf_token.as_str();
    let confirm = confirm_query(&form.confirm);
    let flash = match form.op.as_str() {
        "create" => {
            let names = items(&form.names);
            let mut body = json!({ "name": name, "ranges": items(&form.ranges) });
            match form.applies_to.as_str() {
                "everyone" => body["everyone"] = json!(true),
                kind @ ("roles" | "groups" | "users") => body[kind] = json!(names),
                _ => {}
            }
            console
                .submit(
                    Method::POST,
                    &format!("/ip-rules{confirm}"),
                    token,
                    Some(body),
                    |_| format!("IP rule {name} added."),
                )
                .await
        }
        "delete" => {
            console
                .submit(
                    Method::DELETE,
                    &format!("/ip-rules/{}{confirm}", segment(name)),
                    token,
                    None,
                    |_| format!("IP rule {name} removed."),
                )
                .await
        }
        _ => Flash::invalid("Unknown action."),
    };
    ip_rules_page(console, flash).await
}

/// A security policy as the API lists it.
#[derive(Deserialize)]
struct PolicyRow {
    name: String,
    mfa_required: bool,
    mfa_methods: Vec<String>,
    session_absolute_secs: u64,
    session_idle_secs: u64,
    password_min_length: u32,
    ip_ranges: Option<Vec<String>>,
    is_default: bool,
    managed_by: String,
}

impl PolicyRow {
    /// Whether the policy accepts second-factor method `method`.
    fn has(&self, method: &str) -> bool {
        self.mfa_methods.iter().any(|m| m == method)
    }
}

/// A policy assignment as the API lists it.
#[derive(Deserialize)]
struct AssignmentRow {
    policy: String,
    target_kind: String,
    target_name: String,
    priority: i64,
}

#[derive(Template)]
#[template(path = "admin_policies.html")]
struct PoliciesPage {
    l: Layout,
    policies: Vec<PolicyRow>,
    assignments: Vec<AssignmentRow>,
}

/// Body of `POST /admin/policies`.
#[derive(Deserialize)]
pub struct PolicyForm {
    /// The page's double-submit token (missing: refused like a wrong one).
    #[serde(default)]
    csrf_token: String,
    /// `create`, `save` (replace), `delete`, `assign`, `unassign`.
    #[serde(default)]
    op: String,
    #[serde(default)]
    name: String,
    mfa_required: Option<String>,
    /// One checkbox per method (a form cannot repeat a field name here).
    mfa_totp: Option<String>,
    mfa_webauthn: Option<String>,
    mfa_recovery_code: Option<String>,
    /// Seconds; empty: the default.
    #[serde(default)]
    session_absolute_secs: String,
    #[serde(default)]
    session_idle_secs: String,
    #[serde(default)]
    password_min_length: String,
    /// The policy's own allowlist; empty: none.
    #[serde(default)]
    ip_ranges: String,
    is_default: Option<String>,
    /// `user`, `group` or `role`.
    #[serde(default)]
    target_kind: String,
    #[serde(default)]
    target_name: String,
    #[serde(default)]
    priority: String,
    confirm: Option<String>,
}

/// A number field: `Ok(None)` when empty.
fn number(label: &str, text: &str) -> Result<Option<u64>, String> {
    match optional(text) {
        None => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| format!("{label} must be a whole number.")),
    }
}

/// The policy the create form describes.
fn policy_of(form: &PolicyForm) -> Result<Value, String> {
    let mut methods = Vec::new();
    for (field, method) in [
        (&form.mfa_totp, "totp"),
        (&form.mfa_webauthn, "webauthn"),
        (&form.mfa_recovery_code, "recovery_code"),
    ] {
        if field.is_some() {
            methods.push(method);
        }
    }
    let ranges = items(&form.ip_ranges);
    Ok(json!({
        "name": form.name.trim(),
        "mfa_required": form.mfa_required.is_some(),
        "mfa_methods": if methods.is_empty() { None } else { Some(methods) },
        "session_absolute_secs": number("Session lifetime", &form.session_absolute_secs)?,
        "session_idle_secs": number("Idle timeout", &form.session_idle_secs)?,
        "password_min_length": number("Minimum password length", &form.password_min_length)?,
        "ip_ranges": if ranges.is_empty() { None } else { Some(ranges) },
        "is_default": form.is_default.is_some(),
    }))
}

async fn policies_page(console: Console, flash: Flash) -> Response {
    if let Err(denied) = console.require(Section::Policies).await {
        return denied;
    }
    let (policies, flash) = console.list::<PolicyRow>("/policies", flash).await;
    let assignments = console
        .get::<Vec<AssignmentRow>>("/policy-assignments")
        .await
        .unwrap_or_default();
    let page = PoliciesPage {
        l: console.layout(Section::Policies, &flash).await,
        policies,
        assignments,
    };
    console.page(&page, &flash)
}

/// `GET /admin/policies`.
pub async fn policies(console: Console) -> Response {
    policies_page(console, Flash::default()).await
}

/// `POST /admin/policies`: create or delete a policy, assign or unassign it, through the API.
pub async fn policies_submit(
    console: Console,
    CheckedForm(form): CheckedForm<PolicyForm>,
) -> Response {
    let name = form.name.trim();
    let token = form.csrf_token.as_str();
    let confirm = confirm_query(&form.confirm);
    let flash = match form.op.as_str() {
        "create" => match policy_of(&form) {
            Err(message) => Flash::invalid(message),
            Ok(body) => {
                console
                    .submit(
                        Method::POST,
                        &format!("/policies{confirm}"),
                        token,
                        Some(body),
                        |_| format!("Security policy {name} created."),
                    )
                    .await
            }
        },
        "save" => match policy_of(&form) {
            Err(message) => Flash::invalid(message),
            Ok(body) => {
                console
                    .submit(
                        Method::PUT,
                        &format!("/policies/{}{confirm}", segment(name)),
                        token,
                        Some(body),
                        |_| format!("Security policy {name} saved."),
                    )
                    .await
            }
        },
        "delete" => {
            console
                .submit(
                    Method::DELETE,
                    &format!("/policies/{}{confirm}", segment(name)),
                    token,
                    None,
                    |_| format!("Security policy {name} deleted."),
                )
                .await
        }
        "assign" => match number("Priority", &form.priority) {
            Err(message) => Flash::invalid(message),
            Ok(priority) => {
                let body = json!({
                    "policy": name,
                    "target_kind": form.target_kind,
                    "target_name": form.target_name.trim(),
                    "priority": priority.unwrap_or(0),
                });
                console
                    .submit(
                        Method::PUT,
                        &format!("/policy-assignments{confirm}"),
                        token,
                        Some(body),
                        |_| {
                            format!(
                                "Policy {name} assigned to {} {}.",
                                form.target_kind,
                                form.target_name.trim()
                            )
                        },
                    )
                    .await
            }
        },
        "unassign" => {
            console
                .submit(
                    Method::DELETE,
                    &format!(
                        "/policy-assignments/{}/{}{confirm}",
                        segment(&form.target_kind),
                        segment(form.target_name.trim())
                    ),
                    token,
                    None,
                    |_| "Assignment removed.".to_owned(),
                )
                .await
        }
        _ => Flash::invalid("Unknown action."),
    };
    policies_page(console, flash).await
}

crate::web::forms::csrf_protected!(IpRuleForm, PolicyForm);
