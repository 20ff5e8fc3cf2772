//! The `tessera` command line, run as a real process against a SQLite directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const SP_METADATA: &str = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sp.example/saml">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/acs" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#;

fn tessera(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(dir)
        .env_remove("TESSERA_CONFIG")
        .env(
            "TESSERA_DATABASE_URL",
            format!("sqlite://{}", dir.join("t.db").display()),
        )
        .env("TESSERA_CERTS_DIR", dir.join("certs"))
        .env("TESSERA_METADATA_DIR", dir.join("metadata"))
        .env("TESSERA_DATA_DIR", dir.join("data"))
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tessera");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn users_are_added_listed_disabled_and_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = tessera(
        d,
        &["user", "add", "alice", "--email", "alice@example.org"],
        "correct horse battery staple\n",
    );
    assert!(ok.status.success(), "{}", text(&ok));

    let dup = tessera(d, &["user", "add", "alice"], "another long passphrase\n");
    assert!(!dup.status.success());
    assert!(text(&dup).contains("already exists"), "{}", text(&dup));

    let weak = tessera(d, &["user", "add", "bob"], "123456\n");
    assert!(!weak.status.success());
    assert!(text(&weak).contains("password refused"), "{}", text(&weak));
    let list = tessera(d, &["user", "list"], "");
    assert!(
        text(&list).contains("alice") && !text(&list).contains("bob"),
        "{}",
        text(&list)
    );

    let disable = tessera(d, &["user", "disable", "alice"], "");
    assert!(disable.status.success(), "{}", text(&disable));
    let show = tessera(d, &["user", "show", "alice"], "");
    assert!(text(&show).contains("disabled"), "{}", text(&show));

    let missing = tessera(d, &["user", "show", "nobody"], "");
    assert!(!missing.status.success());
    assert!(text(&missing).contains("not found"), "{}", text(&missing));
}

#[test]
fn service_providers_from_metadata_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("sp.xml"), SP_METADATA).unwrap();
    std::fs::write(d.join("bad.xml"), "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"x\"><md:SPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\"><md:AssertionConsumerService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\"/></md:SPSSODescriptor></md:EntityDescriptor>").unwrap();
    std::fs::write(d.join("junk.xml"), "not xml at all").unwrap();

    let add = tessera(d, &["sp", "add", "sp.xml", "--name", "Payroll"], "");
    assert!(add.status.success(), "{}", text(&add));
    let again = tessera(d, &["sp", "add", "sp.xml"], "");
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));

    let bad = tessera(d, &["sp", "add", "bad.xml"], "");
    assert!(!bad.status.success());
    let message = text(&bad);
    assert!(
        message.contains("AssertionConsumerService") && message.contains("Location"),
        "{message}"
    );
    let junk = tessera(d, &["sp", "add", "junk.xml"], "");
    assert!(!junk.status.success(), "{}", text(&junk));
    // Plain http is refused off the loopback (without a pinned signing certificate).
    let plain_http = tessera(d, &["sp", "add", "http://sp.example/metadata"], "");
    assert!(text(&plain_http).contains("https"), "{}", text(&plain_http));

    let show = tessera(d, &["sp", "show", "https://sp.example/saml"], "");
    assert!(
        text(&show).contains("Payroll") && text(&show).contains("https://sp.example/acs"),
        "{}",
        text(&show)
    );
    tessera(
        d,
        &["user", "add", "alice"],
        "correct horse battery staple\n",
    );
    let assign = tessera(d, &["sp", "assign", "https://sp.example/saml", "alice"], "");
    assert!(assign.status.success(), "{}", text(&assign));
    let user = tessera(d, &["user", "show", "alice"], "");
    assert!(
        text(&user).contains("https://sp.example/saml"),
        "{}",
        text(&user)
    );
    let remove = tessera(d, &["sp", "remove", "https://sp.example/saml"], "");
    assert!(remove.status.success(), "{}", text(&remove));
    assert!(!text(&tessera(d, &["sp", "list"], "")).contains("sp.example"));
}

#[test]
fn keys_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let generate = tessera(d, &["keys", "generate", "--ec"], "");
    assert!(generate.status.success(), "{}", text(&generate));
    let list = tessera(d, &["keys", "list"], "");
    assert!(
        text(&list).contains("current") && text(&list).contains("Ecdsa"),
        "{}",
        text(&list)
    );
    let rotate = tessera(d, &["keys", "rotate"], "");
    assert!(
        text(&rotate).contains("next key created"),
        "{}",
        text(&rotate)
    );
    let metadata = tessera(d, &["metadata"], "");
    assert!(metadata.status.success(), "{}", text(&metadata));
    let xml = String::from_utf8(metadata.stdout).unwrap();
    // Both the current and the announced next certificate are published.
    assert_eq!(xml.matches("<md:KeyDescriptor").count(), 2, "{xml}");
    assert!(xml.contains("SingleSignOnService"));
}

#[test]
fn a_bad_config_file_is_refused_with_its_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("t.toml"), "listen = \"nonsense\"\n").unwrap();
    let out = tessera(d, &["--config", "t.toml", "user", "list"], "");
    assert!(!out.status.success());
    assert!(text(&out).contains("t.toml"), "{}", text(&out));
}
