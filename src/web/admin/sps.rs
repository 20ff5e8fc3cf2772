//! Console pages for applications: the SP list with registration by metadata upload, one SP's
//! settings, metadata and direct assignments, and the conditional assignment rules.

use askama::Template;
use axum::extract::{Multipart, Path};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{csrf_refused, items, optional, segment, Console, Flash, Layout, Section};
use crate::api::auth::Action;
use crate::directory::{
    NAMEID_FORMAT_EMAIL, NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT,
    NAMEID_FORMAT_UNSPECIFIED,
};
use crate::policy::{AssignmentRule, Condition, Predicate};
use crate::web::forms::CheckedForm;

/// The largest metadata document the upload form takes.
const MAX_METADATA: usize = 1024 * 1024;

/// One attribute released to an SP.
#[derive(Debug, Deserialize)]
struct ReleaseRow {
    user_attribute: Option<String>,
    #[serde(default)]
    static_values: Vec<String>,
    saml_name: String,
    name_format: Option<String>,
    friendly_name: Option<String>,
}

/// An SP's settings as the API shows them.
#[derive(Debug, Deserialize)]
struct SettingsRow {
    nameid_format: Option<String>,
    nameid_attribute: Option<String>,
    #[serde(default)]
    attribute_release: Vec<ReleaseRow>,
    sign_assertion: Option<bool>,
    sign_response: Option<bool>,
    encrypt_assertion: Option<bool>,
    enabled: Option<bool>,
    allow_sha1: Option<bool>,
}

/// An SP as the API shows it.
#[derive(Debug, Deserialize)]
struct SpRow {
    id: i64,
    entity_id: String,
    display_name: String,
    settings: SettingsRow,
    metadata_xml: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_sps.html")]
struct SpsPage {
    l: Layout,
    sps: Vec<SpRow>,
    /// Show the registration form (super and org admins).
    can_register: bool,
}

async fn list_page(console: Console, flash: Flash) -> Response {
    if let Err(denied) = console.require(Section::Sps).await {
        return denied;
    }
    // The API lists only the SPs the admin may read (app admins: theirs).
    let (sps, flash) = console.list::<SpRow>("/sps", flash).await;
    let page = SpsPage {
        l: console.layout(Section::Sps, &flash).await,
        sps,
        can_register: console.may(Action::CreateOrDeleteSp).await,
    };
    console.page(&page, &flash)
}

/// `GET /admin/sps`.
pub async fn list(console: Console) -> Response {
    list_page(console, Flash::default()).await
}

/// `POST /admin/sps` (multipart): registers an SP from an uploaded metadata file (or pasted text),
/// with a display name. The API parses the metadata strictly and registers nothing when it is refused.
pub async fn register(console: Console, headers: HeaderMap, mut form: Multipart) -> Response {
    let mut csrf = String::new();
    let mut display_name = String::new();
    let mut file = Vec::new();
    let mut pasted = String::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return list_page(
                    console,
                    Flash::invalid(format!("The upload could not be read: {}", e.body_text())),
                )
                .await
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = match field.bytes().await {
            Ok(b) if b.len() <= MAX_METADATA => b,
            Ok(_) => {
                return list_page(
                    console,
                    Flash::invalid("The metadata file is larger than 1 MiB."),
                )
                .await
            }
            Err(e) => {
                return list_page(
                    console,
                    Flash::invalid(format!("The upload could not be read: {}", e.body_text())),
                )
                .await
            }
        };
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match name.as_str() {
            "csrf_token" => csrf = text(),
            "display_name" => display_name = text(),
            "metadata" => file = bytes.to_vec(),
            "metadata_xml" => pasted = text(),
            _ => {}
        }
    }
    if let Some(refused) = csrf_refused(&headers, &csrf) {
        return refused;
    }
    let metadata = if !file.is_empty() {
        match String::from_utf8(file) {
            Ok(text) => text,
            Err(_) => {
                return list_page(
                    console,
                    Flash::invalid("The metadata file is not UTF-8 text."),
                )
                .await
            }
        }
    } else {
        pasted
    };
    if metadata.trim().is_empty() {
        return list_page(
            console,
            Flash::invalid("Choose the SP's metadata file (or paste its XML)."),
        )
        .await;
    }
    let body = json!({
        "metadata_xml": metadata,
        "display_name": optional(&display_name),
    });
    let created = console
        .change::<SpRow>(Method::POST, "/sps", &csrf, Some(body))
        .await;
    let flash = Flash::of(created, |sp| {
        format!("Registered {} ({}).", sp.display_name, sp.entity_id)
    });
    list_page(console, flash).await
}

#[derive(Template)]
#[template(path = "admin_sp.html")]
struct SpPage {
    l: Layout,
    sp: SpRow,
    /// The NameID formats to choose from: (URI, label, the SP's current one).
    formats: Vec<(&'static str, &'static str, bool)>,
    /// The attribute release as the textarea shows it, one `user_attribute saml_name` per line.
    release: String,
    /// Users the SP is assigned to directly.
    users: Vec<String>,
    /// Show the delete button (super and org admins).
    can_delete: bool,
}

/// Body of `POST /admin/sps/{id}`.
#[derive(Deserialize)]
pub struct SpForm {
    /// The page's double-submit token (missing: refused like a wrong one).
    #[serde(default)]
    csrf_token: String,
    /// `settings`, `enable`, `disable`, `assign`, `unassign`, `metadata`, `delete`.
    #[serde(default)]
    op: String,
    #[serde(default)]
    nameid_format: String,
    #[serde(default)]
    nameid_attribute: String,
    /// Checkboxes: present when ticked.
    sign_assertion: Option<String>,
    sign_response: Option<String>,
    encrypt_assertion: Option<String>,
    allow_sha1: Option<String>,
    /// One `user_attribute saml_name [friendly name]` per line.
    #[serde(default)]
    attribute_release: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    metadata_xml: String,
}

async fn detail_page(console: Console, id: i64, flash: Flash) -> Response {
    let sp = match console.get::<SpRow>(&format!("/sps/{id}")).await {
        Ok(sp) => sp,
        Err(f) => return super::page_error(f.status, &f.message),
    };
    let users = console
        .get::<Vec<Value>>(&format!("/sps/{id}/users"))
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|u| u["username"].as_str().map(str::to_owned))
        .collect();
    let release = sp
        .settings
        .attribute_release
        .iter()
        .map(|r| {
            // A fixed-value rule is written `=value,value` in the source column.
            let source = match &r.user_attribute {
                Some(attribute) if r.static_values.is_empty() => attribute.clone(),
                _ => format!("={}", r.static_values.join(",")),
            };
            match &r.friendly_name {
                Some(f) => format!("{source} {} {f}", r.saml_name),
                None => format!("{source} {}", r.saml_name),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let page = SpPage {
        l: console.layout(Section::Sps, &flash).await,
        formats: [
            (NAMEID_FORMAT_UNSPECIFIED, "unspecified"),
            (NAMEID_FORMAT_EMAIL, "email address"),
            (NAMEID_FORMAT_PERSISTENT, "persistent"),
            (NAMEID_FORMAT_TRANSIENT, "transient"),
        ]
        .into_iter()
        .map(|(uri, label)| {
            (
                uri,
                label,
                sp.settings.nameid_format.as_deref() == Some(uri),
            )
        })
        .collect(),
        release,
        users,
        can_delete: console.may(Action::CreateOrDeleteSp).await,
        sp,
    };
    console.page(&page, &flash)
}

/// `GET /admin/sps/{id}`: one SP (the API refuses SPs the admin may not read).
pub async fn detail(console: Console, Path(id): Path<i64>) -> Response {
    detail_page(console, id, Flash::default()).await
}

/// The settings of the form, with the attribute release parsed; `Err` says which line is wrong.
fn settings_of(form: &SpForm, current: &SpRow) -> Result<Value, String> {
    let mut release = Vec::new();
    for (n, line) in form.attribute_release.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            [source, saml_name, friendly @ ..] => {
                let existing = current
                    .settings
                    .attribute_release
                    .iter()
                    .find(|r| r.saml_name == *saml_name);
                let mut rule = json!({
                    "saml_name": saml_name,
                    "name_format": existing.and_then(|r| r.name_format.clone()),
                    "friendly_name": if friendly.is_empty() { None } else { Some(friendly.join(" ")) },
                });
                match source.strip_prefix('=') {
                    Some(values) => {
                        rule["static_values"] = json!(values.split(',').collect::<Vec<_>>())
                    }
                    None => rule["user_attribute"] = json!(source),
                }
                release.push(rule);
            }
            [_] => {
                return Err(format!(
                    "Attribute release, line {}: write the user attribute, then the SAML attribute name.",
                    n + 1
                ))
            }
        }
    }
    Ok(json!({
        "nameid_format": optional(&form.nameid_format),
        "nameid_attribute": optional(&form.nameid_attribute),
        "attribute_release": release,
        "sign_assertion": form.sign_assertion.is_some(),
        "sign_response": form.sign_response.is_some(),
        "encrypt_assertion": form.encrypt_assertion.is_some(),
        // Enabling and disabling are their own buttons; the settings form keeps the current state.
        "enabled": current.settings.enabled.unwrap_or(true),
        "allow_sha1": form.allow_sha1.is_some(),
    }))
}

/// `POST /admin/sps/{id}`: one change to the SP, through the API.
pub async fn detail_submit(
    console: Console,
    Path(id): Path<i64>,
    CheckedForm(form): CheckedForm<SpForm>,
) -> Response {
    let base = format!("/sps/{id}");
    let token = form.csrf_token.as_str();
    let flash = match form.op.as_str() {
        "settings" => match console.get::<SpRow>(&base).await {
            Err(f) => Flash::refused(f),
            Ok(current) => match settings_of(&form, &current) {
                Err(message) => Flash::invalid(message),
                Ok(settings) => {
                    console
                        .submit(
                            Method::PUT,
                            &format!("{base}/settings"),
                            token,
                            Some(settings),
                            |_| "Settings saved.".to_owned(),
                        )
                        .await
                }
            },
        },
        op @ ("enable" | "disable") => {
            console
                .submit(Method::POST, &format!("{base}/{op}"), token, None, |_| {
                    format!("Application {op}d.")
                })
                .await
        }
        op @ ("assign" | "unassign") => {
            let username = form.username.trim();
            if username.is_empty() {
                Flash::invalid("Give a username.")
            } else {
                let method = if op == "assign" {
                    Method::PUT
                } else {
                    Method::DELETE
                };
                console
                    .submit(
                        method,
                        &format!("{base}/users/{}", segment(username)),
                        token,
                        None,
                        |_| format!("{username} {op}ed."),
                    )
                    .await
            }
        }
        "metadata" => {
            console
                .submit(
                    Method::PUT,
                    &format!("{base}/metadata"),
                    token,
                    Some(json!({ "metadata_xml": form.metadata_xml })),
                    |_| "Metadata replaced.".to_owned(),
                )
                .await
        }
        "delete" => match console
            .change::<Value>(Method::DELETE, &base, token, None)
            .await
        {
            Ok(_) => return Redirect::to("/admin/sps").into_response(),
            Err(f) => Flash::refused(f),
        },
        _ => Flash::invalid("Unknown action."),
    };
    detail_page(console, id, flash).await
}

/// One assignment rule on the page.
struct RuleRow {
    name: String,
    /// The condition in words.
    condition: String,
    targets: Vec<String>,
    enabled: bool,
}

#[derive(Template)]
#[template(path = "admin_assignment_rules.html")]
struct RulesPage {
    l: Layout,
    rules: Vec<RuleRow>,
    /// The SPs a rule can grant: (entityID, display name).
    sps: Vec<(String, String)>,
}

/// Body of `POST /admin/assignment-rules`.
#[derive(Deserialize)]
pub struct RuleForm {
    /// The page's double-submit token (missing: refused like a wrong one).
    #[serde(default)]
    csrf_token: String,
    /// `create`, `enable`, `disable`, `delete`.
    #[serde(default)]
    op: String,
    #[serde(default)]
    name: String,
    /// `group`, `role` or `attribute`.
    #[serde(default)]
    kind: String,
    /// The group or role; for `attribute`, its name.
    #[serde(default)]
    subject: String,
    /// For `attribute`: the accepted values, comma-separated.
    #[serde(default)]
    values: String,
    /// The SP granted (entityID).
    #[serde(default)]
    target: String,
}

/// A condition in words: `group = sales and department in (Sales, Marketing) or role = admin`.
fn describe(condition: &Condition) -> String {
    condition
        .any
        .iter()
        .map(|clause| {
            clause
                .all
                .iter()
                .map(|p| match p {
                    Predicate::Group(g) => format!("group = {g}"),
                    Predicate::Role(r) => format!("role = {r}"),
                    Predicate::Attribute { name, values } => {
                        format!("{name} in ({})", values.join(", "))
                    }
                })
                .collect::<Vec<_>>()
                .join(" and ")
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

async fn rules_page(console: Console, flash: Flash) -> Response {
    if let Err(denied) = console.require(Section::AssignmentRules).await {
        return denied;
    }
    let (rules, flash) = console
        .list::<AssignmentRule>("/assignment-rules", flash)
        .await;
    let sps = console
        .get::<Vec<SpRow>>("/sps")
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|sp| (sp.entity_id, sp.display_name))
        .collect();
    let page = RulesPage {
        l: console.layout(Section::AssignmentRules, &flash).await,
        rules: rules
            .into_iter()
            .map(|r| RuleRow {
                condition: describe(&r.condition),
                name: r.name,
                targets: r.targets,
                enabled: r.enabled,
            })
            .collect(),
        sps,
    };
    console.page(&page, &flash)
}

/// `GET /admin/assignment-rules`.
pub async fn rules(console: Console) -> Response {
    rules_page(console, Flash::default()).await
}

/// The rule the create form describes.
fn rule_of(form: &RuleForm) -> Result<Value, String> {
    let name = form.name.trim();
    let subject = form.subject.trim();
    if name.is_empty() {
        return Err("Give the rule a name.".to_owned());
    }
    if subject.is_empty() {
        return Err("Name the group, role or attribute the rule looks at.".to_owned());
    }
    if form.target.trim().is_empty() {
        return Err("Choose the application the rule grants.".to_owned());
    }
    let predicate = match form.kind.as_str() {
        "group" => json!({ "group": subject }),
        "role" => json!({ "role": subject }),
        "attribute" => {
            let values = items(&form.values);
            if values.is_empty() {
                return Err("Give at least one accepted attribute value.".to_owned());
            }
            json!({ "attribute": { "name": subject, "values": values } })
        }
        _ => return Err("Choose group, role or attribute.".to_owned()),
    };
    Ok(json!({
        "name": name,
        "condition": { "any": [ { "all": [predicate] } ] },
        "targets": [form.target.trim()],
        "enabled": true,
    }))
}

/// `POST /admin/assignment-rules`: create, switch on or off, or delete a rule, through the API.
pub async fn rules_submit(console: Console, CheckedForm(form): CheckedForm<RuleForm>) -> Response {
    let name = form.name.trim().to_owned();
    let path = format!("/assignment-rules/{}", segment(&name));
    let token = form.csrf_token.as_str();
    let flash = match form.op.as_str() {
        "create" => match rule_of(&form) {
            Err(message) => Flash::invalid(message),
            Ok(rule) => {
                console
                    .submit(Method::POST, "/assignment-rules", token, Some(rule), |_| {
                        format!("Assignment rule {name} created.")
                    })
                    .await
            }
        },
        op @ ("enable" | "disable") => {
            let rules = console
                .get::<Vec<AssignmentRule>>("/assignment-rules")
                .await;
            match rules.map(|r| r.into_iter().find(|r| r.name == name)) {
                Err(f) => Flash::refused(f),
                Ok(None) => Flash {
                    status: Some(StatusCode::NOT_FOUND),
                    ..Flash::invalid(format!("No assignment rule {name}."))
                },
                Ok(Some(mut rule)) => {
                    rule.enabled = op == "enable";
                    let body = serde_json::to_value(&rule).unwrap_or(Value::Null);
                    console
                        .submit(Method::PUT, &path, token, Some(body), |_| {
                            format!("Assignment rule {name} {op}d.")
                        })
                        .await
                }
            }
        }
        "delete" => {
            console
                .submit(Method::DELETE, &path, token, None, |_| {
                    format!("Assignment rule {name} deleted.")
                })
                .await
        }
        _ => Flash::invalid("Unknown action."),
    };
    rules_page(console, flash).await
}

crate::web::forms::csrf_protected!(SpForm, RuleForm);
