//! The SQL directory against both backends.
//!
//! Every case runs twice, once on a SQLite file in a temporary directory and once on a fresh PostgreSQL
//! database (see `common::postgres`), through the same `Directory` API and the same migrations.

mod common;

use std::collections::BTreeMap;
use std::error::Error as StdError;

use sqlx::Row;
use tessera::directory::{
    AttributeRelease, Directory, EntryKind, Error, MetadataUpsert, NewServiceProvider, NewUser,
    PasswordCheck, PasswordHasher, SpSettings, UserProfile, UserStatus, ATTRNAME_FORMAT_BASIC,
    NAMEID_FORMAT_EMAIL,
};

type TestResult = Result<(), Box<dyn StdError>>;

/// Small argon2id costs so the suite stays fast; the logic is the same as with production costs.
fn fast_hasher() -> Result<PasswordHasher, Error> {
    PasswordHasher::new(256, 1, 1)
}

/// A database for one test; keeps the temporary directory or the PostgreSQL database alive.
enum Backend {
    /// A SQLite file inside a temporary directory.
    Sqlite(tempfile::TempDir),
    /// A throwaway PostgreSQL database.
    Postgres(common::postgres::TestDatabase),
}

impl Backend {
    async fn sqlite() -> Result<Self, Box<dyn StdError>> {
        Ok(Backend::Sqlite(tempfile::tempdir()?))
    }

    async fn postgres() -> Result<Self, Box<dyn StdError>> {
        Ok(Backend::Postgres(
            common::postgres::TestDatabase::create().await?,
        ))
    }

    /// The URL of the database. For SQLite the file sits in a sub-directory that does not exist yet,
    /// so connecting also checks that the directory creates missing parents.
    fn url(&self) -> String {
        match self {
            Backend::Sqlite(dir) => {
                format!("sqlite://{}", dir.path().join("data/tessera.db").display())
            }
            Backend::Postgres(db) => db.url.clone(),
        }
    }

    async fn directory(&self) -> Result<Directory, Error> {
        Directory::connect_with(&self.url(), fast_hasher()?).await
    }
}

/// Runs each listed case against SQLite and PostgreSQL.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() -> super::TestResult {
                    let backend = super::Backend::sqlite().await?;
                    super::$case(&backend).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() -> super::TestResult {
                    let backend = super::Backend::postgres().await?;
                    super::$case(&backend).await
                }
            )*
        }
    };
}

on_both_backends!(
    migrations_apply_and_are_idempotent,
    user_crud,
    duplicate_user_is_refused,
    weak_passwords_are_refused,
    invalid_usernames_are_refused,
    verify_password_outcomes,
    unknown_user_costs_a_verification,
    disabled_user_is_reported_only_with_right_password,
    password_change,
    old_hash_is_upgraded_on_login,
    groups_and_roles,
    service_provider_lifecycle,
    metadata_upsert,
    app_assignments,
    deleting_a_user_removes_memberships,
);

fn alice() -> NewUser {
    NewUser {
        username: "alice".to_owned(),
        password: "correct horse battery".to_owned(),
        email: Some("alice@example.org".to_owned()),
        display_name: Some("Alice Liddell".to_owned()),
        department: Some("Research".to_owned()),
        attributes: BTreeMap::from([("employeeNumber".to_owned(), vec!["4711".to_owned()])]),
    }
}

fn bob() -> NewUser {
    NewUser {
        username: "bob".to_owned(),
        password: "another long passphrase".to_owned(),
        ..NewUser::default()
    }
}

async fn migrations_apply_and_are_idempotent(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    let expected = match backend {
        Backend::Sqlite(_) => "SQLite",
        Backend::Postgres(_) => "PostgreSQL",
    };
    assert_eq!(dir.backend_name().await?, expected);
    dir.create_user(alice()).await?;
    dir.close().await;

    // Connecting again runs the migrator again: no error, data kept, one applied migration recorded.
    let again = backend.directory().await?;
    assert!(again.get_user_by_username("alice").await?.is_some());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&backend.url()).await?;
    let applied: i64 = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations WHERE success = $1")
        .bind(true)
        .fetch_one(&pool)
        .await?
        .try_get("n")?;
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "sql"))
        .count();
    assert_eq!(usize::try_from(applied)?, shipped);
    pool.close().await;
    Ok(())
}

async fn user_crud(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    let created = dir.create_user(alice()).await?;
    assert_eq!(created.username, "alice");
    assert_eq!(created.status, UserStatus::Active);
    assert!(created.id > 0);

    let by_name = dir
        .get_user_by_username("alice")
        .await?
        .ok_or("alice not found by name")?;
    assert_eq!(by_name, created);
    let by_id = dir
        .get_user(created.id)
        .await?
        .ok_or("alice not found by id")?;
    assert_eq!(by_id, created);
    assert_eq!(by_id.attribute_values("email"), vec!["alice@example.org"]);
    assert_eq!(by_id.attribute_values("employeeNumber"), vec!["4711"]);
    assert!(by_id.attribute_values("telephoneNumber").is_empty());
    assert_eq!(dir.get_user_by_username("Alice").await?, None);
    assert_eq!(dir.get_user(created.id.wrapping_add(1)).await?, None);

    dir.create_user(bob()).await?;
    let names: Vec<String> = dir
        .list_users()
        .await?
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    let profile = UserProfile {
        email: None,
        display_name: Some("Alice L.".to_owned()),
        department: Some("Engineering".to_owned()),
        attributes: BTreeMap::from([(
            "eduPersonAffiliation".to_owned(),
            vec!["member".to_owned(), "staff".to_owned()],
        )]),
    };
    let updated = dir.update_user("alice", &profile).await?;
    assert_eq!(updated.email, None);
    assert_eq!(updated.department.as_deref(), Some("Engineering"));
    assert_eq!(
        updated.attribute_values("eduPersonAffiliation"),
        vec!["member", "staff"]
    );
    assert!(updated.attribute_values("employeeNumber").is_empty());
    assert_eq!(dir.get_user(created.id).await?, Some(updated));

    let shadowing = UserProfile {
        attributes: BTreeMap::from([("email".to_owned(), vec!["x@y".to_owned()])]),
        ..UserProfile::default()
    };
    assert!(matches!(
        dir.update_user("alice", &shadowing).await,
        Err(Error::InvalidAttribute(_))
    ));
    assert!(matches!(
        dir.update_user("carol", &profile).await,
        Err(Error::NotFound { kind: EntryKind::User, ref name }) if name == "carol"
    ));

    dir.delete_user("bob").await?;
    assert_eq!(dir.get_user_by_username("bob").await?, None);
    assert!(matches!(
        dir.delete_user("bob").await,
        Err(Error::NotFound {
            kind: EntryKind::User,
            ..
        })
    ));
    Ok(())
}

async fn duplicate_user_is_refused(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    dir.create_user(alice()).await?;
    let again = NewUser {
        password: "a different passphrase".to_owned(),
        ..alice()
    };
    assert!(matches!(
        dir.create_user(again).await,
        Err(Error::DuplicateUser(ref name)) if name == "alice"
    ));
    assert_eq!(dir.list_users().await?.len(), 1);
    Ok(())
}

async fn weak_passwords_are_refused(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    for weak in ["123456", "password", "Password1234", "short pw", "alice"] {
        let user = NewUser {
            password: weak.to_owned(),
            ..alice()
        };
        assert!(
            matches!(dir.create_user(user).await, Err(Error::WeakPassword(_))),
            "{weak:?} was accepted"
        );
    }
    assert!(dir.list_users().await?.is_empty());
    Ok(())
}

async fn invalid_usernames_are_refused(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    let long = "u".repeat(256);
    for bad in ["", " alice", "alice\n", long.as_str()] {
        let user = NewUser {
            username: bad.to_owned(),
            ..alice()
        };
        assert!(
            matches!(dir.create_user(user).await, Err(Error::InvalidUsername(_))),
            "{bad:?} was accepted"
        );
    }
    Ok(())
}

async fn verify_password_outcomes(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    let created = dir.create_user(alice()).await?;
    assert_eq!(
        dir.verify_password("alice", "correct horse battery")
            .await?,
        PasswordCheck::Authenticated(created)
    );
    assert_eq!(
        dir.verify_password("alice", "correct horse batterY")
            .await?,
        PasswordCheck::Rejected
    );
    assert_eq!(
        dir.verify_password("nobody", "correct horse battery")
            .await?,
        PasswordCheck::Rejected
    );
    assert_eq!(dir.verify_password("", "").await?, PasswordCheck::Rejected);
    Ok(())
}

async fn unknown_user_costs_a_verification(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    dir.create_user(alice()).await?;
    let counter = dir.password_hasher().clone();

    let before = counter.verifications();
    assert_eq!(
        dir.verify_password("nobody", "whatever it is").await?,
        PasswordCheck::Rejected
    );
    assert_eq!(
        counter.verifications(),
        before + 1,
        "an unknown user must cost one argon2 verification, like a wrong password"
    );

    let before = counter.verifications();
    assert_eq!(
        dir.verify_password("alice", "whatever it is").await?,
        PasswordCheck::Rejected
    );
    assert_eq!(counter.verifications(), before + 1);
    Ok(())
}

async fn disabled_user_is_reported_only_with_right_password(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    dir.create_user(alice()).await?;
    dir.set_user_status("alice", UserStatus::Disabled).await?;
    let stored = dir
        .get_user_by_username("alice")
        .await?
        .ok_or("alice vanished")?;
    assert_eq!(stored.status, UserStatus::Disabled);
    assert!(matches!(
        dir.verify_password("alice", "correct horse battery").await?,
        PasswordCheck::Disabled(ref u) if u.username == "alice"
    ));
    assert_eq!(
        dir.verify_password("alice", "not the password").await?,
        PasswordCheck::Rejected
    );

    dir.set_user_status("alice", UserStatus::Active).await?;
    assert!(matches!(
        dir.verify_password("alice", "correct horse battery")
            .await?,
        PasswordCheck::Authenticated(_)
    ));
    assert!(matches!(
        dir.set_user_status("nobody", UserStatus::Disabled).await,
        Err(Error::NotFound {
            kind: EntryKind::User,
            ..
        })
    ));
    Ok(())
}

async fn password_change(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    dir.create_user(alice()).await?;
    assert!(matches!(
        dir.set_password("alice", "123456").await,
        Err(Error::WeakPassword(_))
    ));
    dir.set_password("alice", "a brand new passphrase").await?;
    assert_eq!(
        dir.verify_password("alice", "correct horse battery")
            .await?,
        PasswordCheck::Rejected
    );
    assert!(matches!(
        dir.verify_password("alice", "a brand new passphrase")
            .await?,
        PasswordCheck::Authenticated(_)
    ));
    assert!(matches!(
        dir.set_password("nobody", "a brand new passphrase").await,
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

async fn stored_hash(backend: &Backend, username: &str) -> Result<String, Box<dyn StdError>> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&backend.url()).await?;
    let hash: String = sqlx::query("SELECT password_hash FROM users WHERE username = $1")
        .bind(username)
        .fetch_one(&pool)
        .await?
        .try_get("password_hash")?;
    pool.close().await;
    Ok(hash)
}

async fn old_hash_is_upgraded_on_login(backend: &Backend) -> TestResult {
    let old = backend.directory().await?;
    old.create_user(alice()).await?;
    old.close().await;
    assert!(stored_hash(backend, "alice")
        .await?
        .starts_with("$argon2id$v=19$m=256,t=1,p=1$"));

    let stronger = Directory::connect_with(&backend.url(), PasswordHasher::new(512, 2, 1)?).await?;
    assert_eq!(
        stronger
            .verify_password("alice", "wrong password here")
            .await?,
        PasswordCheck::Rejected
    );
    // A failed login does not touch the hash.
    assert!(stored_hash(backend, "alice")
        .await?
        .starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
    assert!(matches!(
        stronger
            .verify_password("alice", "correct horse battery")
            .await?,
        PasswordCheck::Authenticated(_)
    ));
    assert!(stored_hash(backend, "alice")
        .await?
        .starts_with("$argon2id$v=19$m=512,t=2,p=1$"));
    assert!(matches!(
        stronger
            .verify_password("alice", "correct horse battery")
            .await?,
        PasswordCheck::Authenticated(_)
    ));
    Ok(())
}

async fn groups_and_roles(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    dir.create_user(alice()).await?;
    dir.create_user(bob()).await?;
    dir.create_group("staff").await?;
    dir.create_group("admins").await?;
    dir.create_role("auditor").await?;
    assert!(matches!(
        dir.create_group("staff").await,
        Err(Error::DuplicateGroup(ref g)) if g == "staff"
    ));
    assert!(matches!(
        dir.create_role("auditor").await,
        Err(Error::DuplicateRole(_))
    ));
    assert!(matches!(
        dir.create_group("").await,
        Err(Error::InvalidName(_))
    ));

    dir.add_user_to_group("alice", "staff").await?;
    dir.add_user_to_group("alice", "admins").await?;
    dir.add_user_to_group("alice", "staff").await?; // idempotent
    dir.add_user_to_group("bob", "staff").await?;
    dir.add_user_to_role("alice", "auditor").await?;

    let group_names = |groups: Vec<tessera::directory::Group>| {
        groups.into_iter().map(|g| g.name).collect::<Vec<_>>()
    };
    assert_eq!(
        group_names(dir.groups_of("alice").await?),
        ["admins", "staff"]
    );
    assert_eq!(group_names(dir.groups_of("bob").await?), ["staff"]);
    assert_eq!(
        dir.roles_of("alice")
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect::<Vec<_>>(),
        ["auditor"]
    );
    assert!(dir.roles_of("bob").await?.is_empty());
    assert_eq!(dir.list_groups().await?.len(), 2);
    assert_eq!(dir.list_roles().await?.len(), 1);

    assert!(dir.remove_user_from_group("alice", "admins").await?);
    assert!(!dir.remove_user_from_group("alice", "admins").await?);
    assert!(dir.remove_user_from_role("alice", "auditor").await?);
    assert!(dir.roles_of("alice").await?.is_empty());

    assert!(matches!(
        dir.add_user_to_group("alice", "nope").await,
        Err(Error::NotFound { kind: EntryKind::Group, ref name }) if name == "nope"
    ));
    assert!(matches!(
        dir.add_user_to_role("nobody", "auditor").await,
        Err(Error::NotFound {
            kind: EntryKind::User,
            ..
        })
    ));
    assert!(matches!(
        dir.groups_of("nobody").await,
        Err(Error::NotFound {
            kind: EntryKind::User,
            ..
        })
    ));

    dir.delete_group("staff").await?;
    assert!(dir.groups_of("bob").await?.is_empty());
    assert!(matches!(
        dir.delete_role("nope").await,
        Err(Error::NotFound {
            kind: EntryKind::Role,
            ..
        })
    ));
    Ok(())
}

const METADATA: &str = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sp.example.org/sp"><md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"/></md:EntityDescriptor>"#;

fn wiki() -> NewServiceProvider {
    NewServiceProvider {
        entity_id: "https://sp.example.org/sp".to_owned(),
        metadata_xml: METADATA.to_owned(),
        display_name: "Team wiki".to_owned(),
        settings: SpSettings::default(),
    }
}

async fn service_provider_lifecycle(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    let added = dir.add_sp(wiki()).await?;
    assert_eq!(added.settings, SpSettings::default());
    assert!(matches!(
        dir.add_sp(wiki()).await,
        Err(Error::DuplicateEntityId(ref e)) if e == "https://sp.example.org/sp"
    ));
    let fetched = dir
        .get_sp("https://sp.example.org/sp")
        .await?
        .ok_or("SP not found")?;
    assert_eq!(fetched, added);
    assert_eq!(fetched.metadata_xml, METADATA);
    assert_eq!(dir.get_sp("https://other.example.org").await?, None);

    let mut mail = AttributeRelease::new("email", "urn:oid:0.9.2342.19200300.100.1.3");
    mail.friendly_name = Some("mail".to_owned());
    let mut groups = AttributeRelease::new("groups", "memberOf");
    groups.name_format = ATTRNAME_FORMAT_BASIC.to_owned();
    let settings = SpSettings {
        nameid_format: NAMEID_FORMAT_EMAIL.to_owned(),
        nameid_attribute: "email".to_owned(),
        attribute_release: vec![mail, groups],
        sign_assertion: false,
        sign_response: true,
        encrypt_assertion: true,
        enabled: false,
        allow_sha1: true,
    };
    let updated = dir
        .update_sp_settings("https://sp.example.org/sp", &settings)
        .await?;
    assert_eq!(updated.settings, settings);
    let fetched = dir
        .get_sp("https://sp.example.org/sp")
        .await?
        .ok_or("SP not found")?;
    assert_eq!(fetched.settings, settings);
    assert_eq!(fetched.metadata_xml, METADATA);

    let invalid = SpSettings {
        nameid_attribute: String::new(),
        ..settings.clone()
    };
    assert!(matches!(
        dir.update_sp_settings("https://sp.example.org/sp", &invalid)
            .await,
        Err(Error::InvalidSettings(_))
    ));
    assert!(matches!(
        dir.update_sp_settings("https://other.example.org", &settings)
            .await,
        Err(Error::NotFound {
            kind: EntryKind::ServiceProvider,
            ..
        })
    ));

    dir.set_sp_display_name("https://sp.example.org/sp", "Wiki")
        .await?;
    let second = NewServiceProvider {
        entity_id: "https://crm.example.org".to_owned(),
        display_name: "CRM".to_owned(),
        ..wiki()
    };
    dir.add_sp(second).await?;
    let listed: Vec<(String, String)> = dir
        .list_sps()
        .await?
        .into_iter()
        .map(|sp| (sp.entity_id, sp.display_name))
        .collect();
    assert_eq!(
        listed,
        [
            ("https://crm.example.org".to_owned(), "CRM".to_owned()),
            ("https://sp.example.org/sp".to_owned(), "Wiki".to_owned()),
        ]
    );

    let too_long = NewServiceProvider {
        entity_id: format!("https://{}", "a".repeat(1100)),
        ..wiki()
    };
    assert!(matches!(
        dir.add_sp(too_long).await,
        Err(Error::InvalidEntityId(_))
    ));

    dir.remove_sp("https://sp.example.org/sp").await?;
    assert_eq!(dir.get_sp("https://sp.example.org/sp").await?, None);
    assert!(matches!(
        dir.remove_sp("https://sp.example.org/sp").await,
        Err(Error::NotFound {
            kind: EntryKind::ServiceProvider,
            ..
        })
    ));
    assert_eq!(dir.list_sps().await?.len(), 1);
    Ok(())
}

async fn metadata_upsert(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    let entity = "https://sp.example.org/sp";
    assert_eq!(
        dir.upsert_sp_metadata(entity, METADATA).await?,
        MetadataUpsert::Inserted
    );
    let inserted = dir.get_sp(entity).await?.ok_or("SP not inserted")?;
    assert_eq!(inserted.display_name, entity);
    assert_eq!(inserted.settings, SpSettings::default());

    // Settings changed by an operator survive a metadata refresh.
    let settings = SpSettings {
        encrypt_assertion: true,
        ..SpSettings::default()
    };
    dir.update_sp_settings(entity, &settings).await?;
    assert_eq!(
        dir.upsert_sp_metadata(entity, METADATA).await?,
        MetadataUpsert::Unchanged
    );
    let changed = METADATA.replace(
        "<md:SPSSODescriptor",
        "<md:SPSSODescriptor WantAssertionsSigned=\"true\"",
    );
    assert_eq!(
        dir.upsert_sp_metadata(entity, &changed).await?,
        MetadataUpsert::Updated
    );
    let updated = dir.get_sp(entity).await?.ok_or("SP vanished")?;
    assert_eq!(updated.metadata_xml, changed);
    assert_eq!(updated.settings, settings);
    assert_eq!(updated.id, inserted.id);
    assert_eq!(dir.list_sps().await?.len(), 1);
    assert!(matches!(
        dir.upsert_sp_metadata("", METADATA).await,
        Err(Error::InvalidEntityId(_))
    ));
    Ok(())
}

async fn app_assignments(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    dir.create_user(alice()).await?;
    dir.create_user(bob()).await?;
    dir.add_sp(wiki()).await?;
    let entity = "https://sp.example.org/sp";
    assert!(!dir.is_assigned("alice", entity).await?);
    dir.assign_app("alice", entity).await?;
    dir.assign_app("alice", entity).await?; // idempotent
    assert!(dir.is_assigned("alice", entity).await?);
    assert!(!dir.is_assigned("bob", entity).await?);
    let apps: Vec<String> = dir
        .apps_of("alice")
        .await?
        .into_iter()
        .map(|sp| sp.entity_id)
        .collect();
    assert_eq!(apps, [entity]);
    assert!(dir.apps_of("bob").await?.is_empty());
    assert!(matches!(
        dir.assign_app("alice", "https://nope.example.org").await,
        Err(Error::NotFound {
            kind: EntryKind::ServiceProvider,
            ..
        })
    ));
    assert!(matches!(
        dir.assign_app("nobody", entity).await,
        Err(Error::NotFound {
            kind: EntryKind::User,
            ..
        })
    ));
    assert!(dir.unassign_app("alice", entity).await?);
    assert!(!dir.unassign_app("alice", entity).await?);
    assert!(!dir.is_assigned("alice", entity).await?);

    // Removing the SP removes its assignments (foreign keys cascade on both backends).
    dir.assign_app("bob", entity).await?;
    dir.remove_sp(entity).await?;
    assert!(dir.apps_of("bob").await?.is_empty());
    Ok(())
}

async fn deleting_a_user_removes_memberships(backend: &Backend) -> TestResult {
    let dir = backend.directory().await?;
    dir.create_user(alice()).await?;
    dir.create_group("staff").await?;
    dir.create_role("auditor").await?;
    dir.add_sp(wiki()).await?;
    dir.add_user_to_group("alice", "staff").await?;
    dir.add_user_to_role("alice", "auditor").await?;
    dir.assign_app("alice", "https://sp.example.org/sp").await?;
    dir.delete_user("alice").await?;

    // Re-creating the user must not resurrect memberships (ids are fresh, rows cascaded away).
    dir.create_user(alice()).await?;
    assert!(dir.groups_of("alice").await?.is_empty());
    assert!(dir.roles_of("alice").await?.is_empty());
    assert!(dir.apps_of("alice").await?.is_empty());

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&backend.url()).await?;
    for table in ["user_groups", "user_roles", "app_assignments"] {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(&pool)
            .await?
            .try_get("n")?;
        assert_eq!(n, 0, "{table} kept rows of a deleted user");
    }
    pool.close().await;
    Ok(())
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable() -> TestResult {
    // Port 1 on loopback: nothing listens there.
    let result =
        Directory::connect_with("postgres://postgres@127.0.0.1:1/tessera", fast_hasher()?).await;
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    Ok(())
}

#[tokio::test]
async fn unsupported_url_is_refused() -> TestResult {
    let result = Directory::connect_with("mysql://localhost/tessera", fast_hasher()?).await;
    assert!(matches!(result, Err(Error::InvalidUrl(_))), "{result:?}");
    Ok(())
}

#[tokio::test]
async fn in_memory_sqlite_works() -> TestResult {
    let dir = Directory::connect_with("sqlite::memory:", fast_hasher()?).await?;
    dir.create_user(alice()).await?;
    assert!(matches!(
        dir.verify_password("alice", "correct horse battery")
            .await?,
        PasswordCheck::Authenticated(_)
    ));
    Ok(())
}

#[tokio::test]
async fn sqlite_file_uses_wal() -> TestResult {
    let backend = Backend::sqlite().await?;
    let dir = backend.directory().await?;
    dir.create_user(alice()).await?;
    let Backend::Sqlite(tmp) = &backend else {
        return Err("not sqlite".into());
    };
    assert!(tmp.path().join("data/tessera.db").is_file());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&backend.url()).await?;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await?
        .try_get(0)?;
    assert_eq!(mode.to_lowercase(), "wal");
    pool.close().await;
    Ok(())
}
