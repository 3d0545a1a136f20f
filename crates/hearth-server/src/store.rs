//! SQLite store (WAL). Queries are built at run time (no `DATABASE_URL` at compile time)
//! and kept to portable SQL so a PostgreSQL driver can take the same statements later.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};

use crate::error::{AppError, Result};
use crate::models::{now_ms, CallRecord, ImageRecord, KeyRecord, VmNetwork, VmRecord, VmState};

/// Versioned migrations, embedded so the binary needs no files beside it.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "core", include_str!("../migrations/0001_core.sql")),
    (2, "jobs", include_str!("../migrations/0002_jobs.sql")),
    (3, "network", include_str!("../migrations/0003_network.sql")),
    (4, "job_oom", include_str!("../migrations/0004_job_oom.sql")),
];

#[derive(Clone, Debug)]
pub struct Store {
    pub pool: SqlitePool,
}

const VM_COLS: &str = "id, state, image_id, image_name, vcpus, memory_mib, vmm, accel, env, \
     metadata, ttl_s, expires_at, created_at, ready_at, boot_ms, error, net_allow, net_subnet";
const IMAGE_COLS: &str = "id, name, kernel_path, rootfs_path, kernel_sha256, rootfs_sha256, \
     source, is_default, created_at";

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

    // ---- VMs ----

    pub async fn insert_vm(&self, vm: &VmRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO vms (id, state, image_id, image_name, vcpus, memory_mib, vmm, accel, env, \
             metadata, ttl_s, expires_at, created_at, ready_at, boot_ms, error, updated_at, \
             net_allow, net_subnet) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&vm.id)
        .bind(vm.state.as_str())
        .bind(&vm.image_id)
        .bind(&vm.image)
        .bind(vm.vcpus as i64)
        .bind(vm.memory_mib as i64)
        .bind(&vm.vmm)
        .bind(&vm.accel)
        .bind(serde_json::to_string(&vm.env).unwrap_or_default())
        .bind(serde_json::to_string(&vm.metadata).unwrap_or_default())
        .bind(vm.ttl_s)
        .bind(vm.expires_at)
        .bind(vm.created_at)
        .bind(vm.ready_at)
        .bind(vm.boot_ms)
        .bind(&vm.error)
        .bind(now_ms())
        .bind(vm.network.as_ref().map(|n| json_list(&n.allow)))
        .bind(vm.network.as_ref().and_then(|n| n.subnet.clone()))
        .execute(&self.pool)
        .await
        .map_err(crate::network::subnet_taken)?;
        Ok(())
    }

    pub async fn get_vm(&self, id: &str) -> Result<Option<VmRecord>> {
        let row = sqlx::query(&format!("SELECT {VM_COLS} FROM vms WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| vm_from_row(&r)).transpose()
    }

    pub async fn vm(&self, id: &str) -> Result<VmRecord> {
        self.get_vm(id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no VM with id {id:?}")))
    }

    pub async fn list_vms(&self, states: &[VmState]) -> Result<Vec<VmRecord>> {
        let rows = if states.is_empty() {
            sqlx::query(&format!("SELECT {VM_COLS} FROM vms ORDER BY created_at"))
                .fetch_all(&self.pool)
                .await?
        } else {
            let marks = vec!["?"; states.len()].join(", ");
            let sql =
                format!("SELECT {VM_COLS} FROM vms WHERE state IN ({marks}) ORDER BY created_at");
            let mut q = sqlx::query(&sql);
            for s in states {
                q = q.bind(s.as_str());
            }
            q.fetch_all(&self.pool).await?
        };
        rows.iter().map(vm_from_row).collect()
    }

    pub async fn count_vms(&self, states: &[VmState]) -> Result<i64> {
        Ok(self.list_vms(states).await?.len() as i64)
    }

    pub async fn set_vm_state(&self, id: &str, state: VmState, error: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE vms SET state = ?, error = ?, updated_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_vm_running(
        &self,
        id: &str,
        vmm: &str,
        accel: &str,
        ready_at: i64,
        boot_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE vms SET state = ?, vmm = ?, accel = ?, ready_at = ?, boot_ms = ?, \
             error = NULL, updated_at = ? WHERE id = ?",
        )
        .bind(VmState::Running.as_str())
        .bind(vmm)
        .bind(accel)
        .bind(ready_at)
        .bind(boot_ms)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// VMs not deleted that boot from `image_id`.
    pub async fn vms_using_image(&self, image_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM vms WHERE image_id = ? AND state IN (?, ?, ?)")
            .bind(image_id)
            .bind(VmState::Creating.as_str())
            .bind(VmState::Running.as_str())
            .bind(VmState::Stopped.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Boot times of running VMs, for the metrics summary.
    pub async fn boot_times_ms(&self) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT boot_ms FROM vms WHERE boot_ms IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
    }

    // ---- images ----

    pub async fn insert_image(&self, img: &ImageRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO images ({IMAGE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&img.id)
        .bind(&img.name)
        .bind(&img.kernel_path)
        .bind(&img.rootfs_path)
        .bind(&img.kernel_sha256)
        .bind(&img.rootfs_sha256)
        .bind(&img.source)
        .bind(img.is_default as i64)
        .bind(img.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                AppError::Conflict(format!("an image named {:?} already exists", img.name))
            }
            _ => AppError::Db(e),
        })?;
        Ok(())
    }

    pub async fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let rows = sqlx::query(&format!("SELECT {IMAGE_COLS} FROM images ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(image_from_row).collect())
    }

    /// Looks an image up by id first, then by name (the CLI passes names).
    pub async fn image(&self, id_or_name: &str) -> Result<ImageRecord> {
        let row = sqlx::query(&format!(
            "SELECT {IMAGE_COLS} FROM images WHERE id = ? OR name = ? ORDER BY (id = ?) DESC"
        ))
        .bind(id_or_name)
        .bind(id_or_name)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| image_from_row(&r))
            .ok_or_else(|| AppError::NotFound(format!("no image with id or name {id_or_name:?}")))
    }

    pub async fn default_image(&self) -> Result<Option<ImageRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {IMAGE_COLS} FROM images WHERE is_default = 1"
        ))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| image_from_row(&r)))
    }

    /// Records one of the two files of an image (`kind` is `kernel` or `rootfs`).
    pub async fn set_image_file(&self, id: &str, kind: &str, path: &str, sha: &str) -> Result<()> {
        let sql = match kind {
            "kernel" => "UPDATE images SET kernel_path = ?, kernel_sha256 = ? WHERE id = ?",
            _ => "UPDATE images SET rootfs_path = ?, rootfs_sha256 = ? WHERE id = ?",
        };
        sqlx::query(sql)
            .bind(path)
            .bind(sha)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Makes `id` the only default image (one transaction: never zero or two defaults).
    pub async fn set_default_image(&self, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE images SET is_default = 0 WHERE is_default = 1")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE images SET is_default = 1 WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_image(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM images WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- API keys ----

    pub async fn insert_key(&self, id: &str, name: &str, hash_hex: &str) -> Result<KeyRecord> {
        let created_at = now_ms();
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(name)
            .bind(hash_hex)
            .bind(created_at)
            .execute(&self.pool)
            .await?;
        Ok(KeyRecord {
            id: id.to_string(),
            name: name.to_string(),
            created_at,
        })
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM api_keys ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| KeyRecord {
                id: r.get(0),
                name: r.get(1),
                created_at: r.get(2),
            })
            .collect())
    }

    /// (id, hex sha256) of every key, for the in-memory auth cache.
    pub async fn key_hashes(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, key_hash FROM api_keys")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// True when a key was deleted.
    pub async fn delete_key(&self, id: &str) -> Result<bool> {
        let res = sqlx::query("DELETE FROM api_keys WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    // ---- call history ----

    pub async fn insert_call(&self, vm_id: &str, call: &CallRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO vm_calls (id, vm_id, kind, input, exit_code, duration_ms, error, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&call.id)
        .bind(vm_id)
        .bind(&call.kind)
        .bind(call.input.to_string())
        .bind(call.exit_code)
        .bind(call.duration_ms)
        .bind(&call.error)
        .bind(call.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn list_calls(&self, vm_id: &str, limit: i64) -> Result<Vec<CallRecord>> {
        let rows = sqlx::query(
            "SELECT id, kind, input, exit_code, duration_ms, error, created_at FROM vm_calls \
             WHERE vm_id = ? ORDER BY created_at DESC, id LIMIT ?",
        )
        .bind(vm_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CallRecord {
                id: r.get(0),
                kind: r.get(1),
                input: serde_json::from_str(&r.get::<String, _>(2)).unwrap_or_default(),
                exit_code: r.get(3),
                duration_ms: r.get(4),
                error: r.get(5),
                created_at: r.get(6),
            })
            .collect())
    }
}

fn json_map(s: &str) -> BTreeMap<String, String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn vm_from_row(r: &SqliteRow) -> Result<VmRecord> {
    let state: String = r.get("state");
    Ok(VmRecord {
        id: r.get("id"),
        state: VmState::from_str(&state).map_err(AppError::Internal)?,
        image_id: r.get("image_id"),
        image: r.get("image_name"),
        vcpus: r.get::<i64, _>("vcpus") as u8,
        memory_mib: r.get::<i64, _>("memory_mib") as u32,
        vmm: r.get("vmm"),
        accel: r.get("accel"),
        env: json_map(&r.get::<String, _>("env")),
        metadata: json_map(&r.get::<String, _>("metadata")),
        ttl_s: r.get("ttl_s"),
        expires_at: r.get("expires_at"),
        created_at: r.get("created_at"),
        ready_at: r.get("ready_at"),
        boot_ms: r.get("boot_ms"),
        error: r.get("error"),
        network: r.get::<Option<String>, _>("net_allow").map(|a| {
            VmNetwork::new(
                serde_json::from_str(&a).unwrap_or_default(),
                r.get("net_subnet"),
            )
        }),
    })
}

pub(crate) fn json_list(l: &[String]) -> String {
    serde_json::to_string(l).unwrap_or_else(|_| "[]".into())
}

fn image_from_row(r: &SqliteRow) -> ImageRecord {
    let kernel_path: Option<String> = r.get("kernel_path");
    let rootfs_path: Option<String> = r.get("rootfs_path");
    ImageRecord {
        ready: kernel_path.is_some() && rootfs_path.is_some(),
        id: r.get("id"),
        name: r.get("name"),
        kernel_path,
        rootfs_path,
        kernel_sha256: r.get("kernel_sha256"),
        rootfs_sha256: r.get("rootfs_sha256"),
        source: r.get("source"),
        is_default: r.get::<i64, _>("is_default") != 0,
        created_at: r.get("created_at"),
    }
}
