//! Scripts and the job queue. Every status change is one conditional `UPDATE`
//! (`WHERE status = ...`), so concurrent actors (workers, cancel, recovery) cannot both
//! win: the loser sees 0 rows and re-reads.

use hearth_api::jobs::{Job, JobParams, JobStatus};
use hearth_api::scripts::Script;
use hearth_api::Language;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{json_col, parsed, Store};
use crate::error::{AppError, Result};
use crate::models::{now_ms, JobRecord, Timestamp};

const SCRIPT_COLS: &str = "id, name, language, size, sha256, created_at";
const JOB_COLS: &str = "id, script_id, name, language, params, status, exit_code, error, \
     script_error, result, queued_at, started_at, finished_at, vm_id, vm_create_ms, claimed_by, \
     attempts, max_retries, log_truncated, oom_killed";

/// A new job, before it is a row.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub language: Language,
    pub name: &'a str,
    /// Inline code; `None` for a script job (the script's content is used).
    pub code: Option<&'a [u8]>,
    pub params: &'a JobParams,
}

/// How a run ended, written in one statement with the final status.
#[derive(Debug, Default)]
pub struct Finish {
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub script_error: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub log_truncated: bool,
    pub oom_killed: bool,
}

impl Store {
    pub async fn insert_script(&self, s: &Script, content: &[u8]) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO scripts ({SCRIPT_COLS}, content) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&s.id)
        .bind(&s.name)
        .bind(s.language.as_str())
        .bind(s.size)
        .bind(&s.sha256)
        .bind(s.created_at.ms())
        .bind(content)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn list_scripts(&self) -> Result<Vec<Script>> {
        let rows = sqlx::query(&format!(
            "SELECT {SCRIPT_COLS} FROM scripts ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(script_from_row).collect()
    }

    pub async fn script(&self, id: &str) -> Result<Script> {
        let row = sqlx::query(&format!("SELECT {SCRIPT_COLS} FROM scripts WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => script_from_row(&r),
            None => Err(AppError::NotFound(format!("no script with id {id:?}"))),
        }
    }

    /// Deletes a script unless a queued or running job still needs its content (one
    /// statement, so a job enqueued concurrently cannot slip in between check and delete).
    pub async fn delete_script(&self, id: &str) -> Result<()> {
        let res = sqlx::query(
            "DELETE FROM scripts WHERE id = ? AND NOT EXISTS \
             (SELECT 1 FROM jobs WHERE script_id = ? AND status IN ('queued', 'running'))",
        )
        .bind(id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            self.script(id).await?;
            return Err(AppError::Conflict(format!(
                "script {id} has queued or running jobs; cancel them first"
            )));
        }
        Ok(())
    }

    /// Inserts a queued job. A script job is inserted only if its script exists (the
    /// `INSERT ... SELECT` finds no row otherwise), which settles a race with a delete.
    pub async fn insert_job(&self, j: NewJob<'_>, script_id: Option<&str>) -> Result<()> {
        let params = serde_json::to_string(j.params).unwrap_or_default();
        let now = now_ms();
        let q = "INSERT INTO jobs (id, script_id, name, language, code, params, status, \
                 queued_at, max_retries, updated_at) ";
        let res = match script_id {
            Some(sid) => {
                sqlx::query(&format!(
                    "{q} SELECT ?, id, name, language, NULL, ?, 'queued', ?, ?, ? \
                     FROM scripts WHERE id = ?"
                ))
                .bind(j.id)
                .bind(&params)
                .bind(now)
                .bind(j.params.max_retries as i64)
                .bind(now)
                .bind(sid)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "{q} VALUES (?, NULL, ?, ?, ?, ?, 'queued', ?, ?, ?)"
                ))
                .bind(j.id)
                .bind(j.name)
                .bind(j.language.as_str())
                .bind(j.code)
                .bind(&params)
                .bind(now)
                .bind(j.params.max_retries as i64)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
        };
        if res.rows_affected() == 0 {
            return Err(AppError::NotFound(format!(
                "no script with id {:?}",
                script_id.unwrap_or_default()
            )));
        }
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<JobRecord> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => job_from_row(&r),
            None => Err(AppError::NotFound(format!("no job with id {id:?}"))),
        }
    }

    /// Newest first, `limit` per page. The cursor is the `(queued_at, id)` of the last job
    /// of the previous page (keyset pagination: stable while new jobs arrive).
    pub async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        script_id: Option<&str>,
        limit: i64,
        cursor: Option<(i64, String)>,
    ) -> Result<Vec<JobRecord>> {
        let mut sql = format!("SELECT {JOB_COLS} FROM jobs WHERE 1 = 1");
        if status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if script_id.is_some() {
            sql.push_str(" AND script_id = ?");
        }
        if cursor.is_some() {
            sql.push_str(" AND (queued_at < ? OR (queued_at = ? AND id < ?))");
        }
        sql.push_str(" ORDER BY queued_at DESC, id DESC LIMIT ?");
        let mut q = sqlx::query(&sql);
        if let Some(s) = status {
            q = q.bind(s.as_str());
        }
        if let Some(s) = script_id {
            q = q.bind(s);
        }
        if let Some((at, id)) = cursor {
            q = q.bind(at).bind(at).bind(id);
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn jobs_in_status(&self, status: JobStatus) -> Result<Vec<JobRecord>> {
        self.list_jobs(Some(status), None, i64::MAX, None).await
    }

    /// Claims the oldest queued job for `worker`, atomically: the inner SELECT and the
    /// UPDATE are one statement, and SQLite runs one writer at a time, so two workers can
    /// never both flip the same row (the `AND status = 'queued'` re-check makes that
    /// explicit). On PostgreSQL with several hosts the same statement becomes
    ///
    /// ```sql
    /// UPDATE jobs SET status = 'running', claimed_by = $1, started_at = $2,
    ///        attempts = attempts + 1, updated_at = $2
    /// WHERE id = (SELECT id FROM jobs WHERE status = 'queued'
    ///             ORDER BY queued_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
    /// RETURNING id;
    /// ```
    ///
    /// where `SKIP LOCKED` lets concurrent claimers take the next row instead of waiting
    /// on (and then losing) the same one.
    pub async fn claim_job(&self, worker: &str) -> Result<Option<JobRecord>> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE jobs SET status = 'running', claimed_by = ?, started_at = ?, \
             attempts = attempts + 1, updated_at = ? \
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
                         ORDER BY queued_at, id LIMIT 1) \
               AND status = 'queued' \
             RETURNING id",
        )
        .bind(worker)
        .bind(now)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(self.job(&r.get::<String, _>(0)).await?)),
            None => Ok(None),
        }
    }

    /// The code to run: the job's own (inline) or its script's.
    pub async fn job_code(&self, id: &str) -> Result<Vec<u8>> {
        let row = sqlx::query(
            "SELECT COALESCE(j.code, s.content) FROM jobs j \
             LEFT JOIN scripts s ON s.id = j.script_id WHERE j.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.and_then(|r| r.get::<Option<Vec<u8>>, _>(0))
            .ok_or_else(|| AppError::NotFound(format!("the script of job {id} is gone")))
    }

    pub async fn set_job_vm(&self, id: &str, vm_id: &str, vm_create_ms: i64) -> Result<()> {
        sqlx::query("UPDATE jobs SET vm_id = ?, vm_create_ms = ?, updated_at = ? WHERE id = ?")
            .bind(vm_id)
            .bind(vm_create_ms)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Final status of a run, only if `worker` still holds the job. False if not.
    pub async fn finish_job(
        &self,
        id: &str,
        worker: &str,
        status: JobStatus,
        f: &Finish,
    ) -> Result<bool> {
        let now = now_ms();
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        let res = sqlx::query(
            "UPDATE jobs SET status = ?, exit_code = ?, error = ?, script_error = ?, result = ?, \
             log_truncated = ?, oom_killed = ?, finished_at = ?, updated_at = ? \
             WHERE id = ? AND status = 'running' AND claimed_by = ?",
        )
        .bind(status.as_str())
        .bind(f.exit_code)
        .bind(&f.error)
        .bind(json(&f.script_error))
        .bind(json(&f.result))
        .bind(f.log_truncated as i64)
        .bind(f.oom_killed as i64)
        .bind(now)
        .bind(now)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Puts a job `worker` holds back in the queue (our side failed; retries remain).
    pub async fn requeue_job(&self, id: &str, worker: &str, error: &str) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE jobs SET status = 'queued', claimed_by = NULL, started_at = NULL, \
             vm_id = NULL, vm_create_ms = NULL, error = ?, updated_at = ? \
             WHERE id = ? AND status = 'running' AND claimed_by = ?",
        )
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn requeue_after_restart(&self, id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'queued', claimed_by = NULL, started_at = NULL, \
             vm_id = NULL, vm_create_ms = NULL, error = 'server restarted; retrying', \
             updated_at = ? WHERE id = ? AND status = 'running'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn fail_after_restart(&self, id: &str, msg: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE jobs SET status = 'error', error = ?, finished_at = ?, updated_at = ? \
             WHERE id = ? AND status = 'running'",
        )
        .bind(msg)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Cancels a job that has not started; false if it is no longer queued.
    pub async fn cancel_queued(&self, id: &str) -> Result<bool> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', error = 'cancelled before it started', \
             finished_at = ?, updated_at = ? WHERE id = ? AND status = 'queued'",
        )
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Flags a running job for cancellation; false if it is not running.
    pub async fn request_cancel(&self, id: &str) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? AND status = 'running'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn cancel_requested(&self, id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT cancel_requested FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some_and(|r| r.get::<i64, _>(0) != 0))
    }
}

fn script_from_row(r: &SqliteRow) -> Result<Script> {
    Ok(Script {
        id: r.get("id"),
        name: r.get("name"),
        language: parsed(r, "language")?,
        size: r.get("size"),
        sha256: r.get("sha256"),
        created_at: Timestamp::from_ms(r.get("created_at")),
    })
}

fn job_from_row(r: &SqliteRow) -> Result<JobRecord> {
    let json = |col: &str| json_col::<serde_json::Value>(r, col);
    let queued_at: i64 = r.get("queued_at");
    let started_at: Option<i64> = r.get("started_at");
    let finished_at: Option<i64> = r.get("finished_at");
    Ok(JobRecord {
        job: Job {
            id: r.get("id"),
            script_id: r.get("script_id"),
            name: r.get("name"),
            language: parsed::<Language>(r, "language")?,
            status: parsed::<JobStatus>(r, "status")?,
            exit_code: r.get::<Option<i64>, _>("exit_code").map(|c| c as i32),
            error: r.get("error"),
            script_error: json("script_error"),
            queued_at: Timestamp::from_ms(queued_at),
            started_at: started_at.map(Timestamp::from_ms),
            finished_at: finished_at.map(Timestamp::from_ms),
            duration_ms: started_at.zip(finished_at).map(|(s, f)| f - s),
            queue_ms: started_at.map(|s| s - queued_at),
            vm_create_ms: r.get("vm_create_ms"),
            vm_id: r.get("vm_id"),
            result: json("result"),
            attempts: r.get("attempts"),
            max_retries: r.get("max_retries"),
            log_truncated: r.get::<i64, _>("log_truncated") != 0,
            oom_killed: r.get::<i64, _>("oom_killed") != 0,
        },
        params: json_col::<JobParams>(r, "params").unwrap_or_default(),
        claimed_by: r.get("claimed_by"),
    })
}
