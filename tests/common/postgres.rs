//! Throwaway PostgreSQL databases for tests.
//!
//! Each test gets its own database `tessera_t_<random hex>` on the server named by `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`, the machine's PostgreSQL), so tests running in
//! parallel never see each other's rows. The database is dropped when the guard is dropped, even when the
//! test failed, with `WITH (FORCE)` so pooled connections still open do not keep it alive.

use sqlx::Connection;

/// The admin database used when `DATABASE_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test; dropped with the guard.
pub struct TestDatabase {
    /// URL of the fresh database, to hand to the code under test.
    pub url: String,
    /// URL of the database the fresh one was created from, used again to drop it.
    admin_url: String,
    /// Name of the fresh database.
    name: String,
}

/// The admin URL: `DATABASE_URL` when set, else [`DEFAULT_ADMIN_URL`].
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

impl TestDatabase {
    /// Creates an empty database with a random name.
    pub async fn create() -> Result<Self, Box<dyn std::error::Error>> {
        let admin_url = admin_url();
        let name = format!("tessera_t_{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut admin = sqlx::postgres::PgConnection::connect(&admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let mut url = url::Url::parse(&admin_url)?;
        url.set_path(&format!("/{name}"));
        Ok(Self {
            url: url.to_string(),
            admin_url,
            name,
        })
    }

    /// The name of the database.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside a tokio runtime, where blocking on another runtime is refused: use a thread.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = sqlx::postgres::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}
