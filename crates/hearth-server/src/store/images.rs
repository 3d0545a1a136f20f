//! Images and API keys.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{parsed, Store};
use crate::error::{AppError, Result};
use crate::models::{now_ms, Image, Key, Timestamp};

const IMAGE_COLS: &str = "id, name, kernel_path, rootfs_path, kernel_sha256, rootfs_sha256, \
     source, is_default, created_at";

impl Store {
    pub async fn insert_image(&self, img: &Image) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO images ({IMAGE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&img.id)
        .bind(&img.name)
        .bind(&img.kernel_path)
        .bind(&img.rootfs_path)
        .bind(&img.kernel_sha256)
        .bind(&img.rootfs_sha256)
        .bind(img.source.as_str())
        .bind(img.is_default as i64)
        .bind(img.created_at.ms())
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

    pub async fn list_images(&self) -> Result<Vec<Image>> {
        let rows = sqlx::query(&format!("SELECT {IMAGE_COLS} FROM images ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(image_from_row).collect()
    }

    /// Looks an image up by id first, then by name (the CLI passes names).
    pub async fn image(&self, id_or_name: &str) -> Result<Image> {
        let row = sqlx::query(&format!(
            "SELECT {IMAGE_COLS} FROM images WHERE id = ? OR name = ? ORDER BY (id = ?) DESC"
        ))
        .bind(id_or_name)
        .bind(id_or_name)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => image_from_row(&r),
            None => Err(AppError::NotFound(format!(
                "no image with id or name {id_or_name:?}"
            ))),
        }
    }

    pub async fn default_image(&self) -> Result<Option<Image>> {
        let row = sqlx::query(&format!(
            "SELECT {IMAGE_COLS} FROM images WHERE is_default = 1"
        ))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| image_from_row(&r)).transpose()
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

    pub async fn insert_key(&self, id: &str, name: &str, hash_hex: &str) -> Result<Key> {
        let created_at = now_ms();
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(name)
            .bind(hash_hex)
            .bind(created_at)
            .execute(&self.pool)
            .await?;
        Ok(Key {
            id: id.to_string(),
            name: name.to_string(),
            created_at: Timestamp::from_ms(created_at),
        })
    }

    pub async fn list_keys(&self) -> Result<Vec<Key>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM api_keys ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Key {
                id: r.get(0),
                name: r.get(1),
                created_at: Timestamp::from_ms(r.get(2)),
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
}

fn image_from_row(r: &SqliteRow) -> Result<Image> {
    let kernel_path: Option<String> = r.get("kernel_path");
    let rootfs_path: Option<String> = r.get("rootfs_path");
    Ok(Image {
        ready: kernel_path.is_some() && rootfs_path.is_some(),
        id: r.get("id"),
        name: r.get("name"),
        kernel_path,
        rootfs_path,
        kernel_sha256: r.get("kernel_sha256"),
        rootfs_sha256: r.get("rootfs_sha256"),
        source: parsed(r, "source")?,
        is_default: r.get::<i64, _>("is_default") != 0,
        created_at: Timestamp::from_ms(r.get("created_at")),
    })
}
