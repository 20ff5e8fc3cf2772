//! A tiny SAML service provider, built on samael, to watch SSO with Tessera happen.
//!
//! Run Tessera first (`cargo run -- serve`), then `cargo run --example demo_sp` and open
//! http://127.0.0.1:8081/. Its metadata is metadata/demo-sp.xml, which Tessera registers at start and
//! assigns to the demo user.
//!
//! Environment: TESSERA_URL (default http://127.0.0.1:8080), DEMO_SP_LISTEN (default 127.0.0.1:8081).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use samael::metadata::EntityDescriptor;
use samael::service_provider::{ServiceProvider, ServiceProviderBuilder};
use serde::Deserialize;

const ENTITY_ID: &str = "http://127.0.0.1:8081/saml/metadata";
const ACS_URL: &str = "http://127.0.0.1:8081/saml/acs";

#[derive(Deserialize)]
struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: String,
    #[serde(rename = "RelayState", default)]
    relay_state: String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn home() -> Html<&'static str> {
    Html("<!doctype html><title>Demo SP</title><h1>Demo SP</h1><p><a href=\"/login\">Sign in with Tessera</a></p>")
}

async fn login(State(sp): State<Arc<ServiceProvider>>) -> Response {
    let sso = match sp.sso_binding_location("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect") {
        Some(url) => url,
        None => return Html("Tessera's metadata has no redirect SSO endpoint").into_response(),
    };
    match sp
        .make_authentication_request(&sso)
        .and_then(|r| r.redirect("demo"))
    {
        Ok(Some(url)) => Redirect::to(url.as_str()).into_response(),
        Ok(None) => Html("could not build the request").into_response(),
        Err(e) => Html(format!(
            "could not build the request: {}",
            escape(&e.to_string())
        ))
        .into_response(),
    }
}

async fn acs(State(sp): State<Arc<ServiceProvider>>, Form(form): Form<AcsForm>) -> Html<String> {
    // The demo does not track request IDs, so it accepts any InResponseTo; a real SP must not.
    match sp.parse_base64_response(&form.saml_response, None) {
        Ok(assertion) => {
            let subject = assertion
                .subject
                .as_ref()
                .and_then(|s| s.name_id.as_ref())
                .map(|n| n.value.clone())
                .unwrap_or_default();
            let mut rows = String::new();
            for statement in assertion.attribute_statements.iter().flatten() {
                for attribute in &statement.attributes {
                    let values: Vec<String> = attribute
                        .values
                        .iter()
                        .filter_map(|v| v.value.clone())
                        .map(|v| escape(&v))
                        .collect();
                    rows.push_str(&format!(
                        "<tr><td>{}</td><td>{}</td></tr>",
                        escape(attribute.name.as_deref().unwrap_or("")),
                        values.join(", ")
                    ));
                }
            }
            Html(format!(
                "<!doctype html><title>Signed in</title><h1>Signed in as {}</h1><p>RelayState: {}</p><table>{rows}</table>",
                escape(&subject),
                escape(&form.relay_state)
            ))
        }
        Err(e) => Html(format!(
            "<!doctype html><h1>Response refused</h1><pre>{}</pre>",
            escape(&format!("{e:?}"))
        )),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let idp = std::env::var("TESSERA_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let listen = std::env::var("DEMO_SP_LISTEN").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let xml = reqwest::get(format!("{idp}/saml/metadata"))
        .await?
        .text()
        .await?;
    let idp_metadata: EntityDescriptor = samael::metadata::de::from_str(&xml)?;
    let sp = ServiceProviderBuilder::default()
        .entity_id(ENTITY_ID.to_string())
        .acs_url(ACS_URL.to_string())
        .idp_metadata(idp_metadata)
        .allow_idp_initiated(true)
        .build()?;
    let app = Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/saml/acs", post(acs))
        .with_state(Arc::new(sp));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("demo SP on http://{listen}/ (entityID {ENTITY_ID}); Tessera at {idp}");
    axum::serve(listener, app).await?;
    Ok(())
}
