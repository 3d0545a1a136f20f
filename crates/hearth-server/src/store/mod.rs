//! SQLite store (WAL): every SQL statement of the server lives under this module, one
//! file per table group ([`vms`]: VMs, their address blocks and call history; [`images`]:
//! images and API keys; [`jobs`]: scripts and the job queue). Queries are built at run
//! time (no `DATABASE_URL` at compile time) and kept to portable SQL so a PostgreSQL
//! driver can take the same statements later.

pub mod images;
pub mod jobs;
pub mod vms;

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};

use crate::error::Result;

/// Versioned migrations, embedded so the binary needs no files beside it.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "core", include_str!("../../migrations/0001_core.sql")),
    (2, "jobs", include_str!("../../migrations/0002_jobs.sql")),
    (
        3,
        "network",
        include_str!("../../migrations/0003_network.sql"),
    ),
    (
        4,
        "job_oom",
        include_str!("../../migrations/0004_job_oom.sql"),
    ),
    (
        5,
        "vm_idle_timeout",
        include_str!("../../migrations/0005_vm_idle_timeout.sql"),
    ),
];

#[derive(Clone, Debug)]
pub struct Store {
    pub pool: SqlitePool,
}

impl Store {
    pub async fn open(path: &Path) -> Result<Store> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Several owner tasks write at once; wait for the lock instead of failing.
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        let migrator = Migrator {
            migrations: Cow::Owned(
                MIGRATIONS
                    .iter()
                    .map(|(v, d, sql)| {
                        Migration::new(
                            *v,
                            Cow::Borrowed(*d),
                            MigrationType::Simple,
                            Cow::Borrowed(*sql),
                            false,
                        )
                    })
                    .collect(),
            ),
            ..Migrator::DEFAULT
        };
        migrator.run(&pool).await?;
        Ok(Store { pool })
    }
}

pub(crate) fn json_list(l: &[String]) -> String {
    serde_json::to_string(l).unwrap_or_else(|_| "[]".into())
}

/// A JSON column, `None` when NULL or unreadable.
pub(crate) fn json_col<T: serde::de::DeserializeOwned>(r: &SqliteRow, col: &str) -> Option<T> {
    r.get::<Option<String>, _>(col)
        .and_then(|s| serde_json::from_str(&s).ok())
}

/// A column of a type the API parses (`VmState`, `Language` ...): a value we did not
/// write means a broken database, an internal error.
pub(crate) fn parsed<T: std::str::FromStr>(r: &SqliteRow, col: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let s: String = r.get(col);
    s.parse()
        .map_err(|e| crate::AppError::Internal(format!("column {col}: {e}")))
}
