//! VMs, their address blocks and their call history.

use std::collections::BTreeMap;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{json_list, parsed, Store};
use crate::error::{AppError, Result};
use hearth_net::Subnet;

use crate::models::{now_ms, vm_network, Call, Timestamp, Vm, VmRecord, VmState};

const VM_COLS: &str = "id, state, image_id, image_name, vcpus, memory_mib, vmm, accel, env, \
     metadata, ttl_s, expires_at, created_at, ready_at, boot_ms, error, net_allow, net_subnet, \
     idle_timeout_s";

/// The UNIQUE index on `net_subnet` is the last wall against two VMs with one address.
fn subnet_taken(e: sqlx::Error) -> AppError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            AppError::Conflict("that address block is already taken by another VM".into())
        }
        _ => AppError::Db(e),
    }
}

impl Store {
    pub async fn insert_vm(&self, vm: &VmRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO vms (id, state, image_id, image_name, vcpus, memory_mib, vmm, accel, env, \
             metadata, ttl_s, expires_at, created_at, ready_at, boot_ms, error, updated_at, \
             net_allow, net_subnet, idle_timeout_s) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(vm.expires_at.map(Timestamp::ms))
        .bind(vm.created_at.ms())
        .bind(vm.ready_at.map(Timestamp::ms))
        .bind(vm.boot_ms)
        .bind(&vm.error)
        .bind(now_ms())
        .bind(vm.network.as_ref().map(|n| json_list(&n.allow)))
        .bind(vm.network.as_ref().and_then(|n| n.subnet.clone()))
        .bind(vm.idle_timeout_s)
        .execute(&self.pool)
        .await
        .map_err(subnet_taken)?;
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
        let rows = sqlx::query("SELECT id FROM vms WHERE image_id = ? AND state IN (?, ?, ?, ?)")
            .bind(image_id)
            .bind(VmState::Creating.as_str())
            .bind(VmState::Running.as_str())
            .bind(VmState::Paused.as_str())
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

    pub async fn insert_call(&self, vm_id: &str, call: &Call) -> Result<()> {
        sqlx::query(
            "INSERT INTO vm_calls (id, vm_id, kind, input, exit_code, duration_ms, error, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&call.id)
        .bind(vm_id)
        .bind(call.kind.as_str())
        .bind(call.input.to_string())
        .bind(call.exit_code)
        .bind(call.duration_ms)
        .bind(&call.error)
        .bind(call.created_at.ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn list_calls(&self, vm_id: &str, limit: i64) -> Result<Vec<Call>> {
        let rows = sqlx::query(
            "SELECT id, kind, input, exit_code, duration_ms, error, created_at FROM vm_calls \
             WHERE vm_id = ? ORDER BY created_at DESC, id LIMIT ?",
        )
        .bind(vm_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(call_from_row).collect()
    }

    // ---- address blocks (see `crate::network`) ----
    /// Every block held by a row, dead VMs included until their network is gone.
    pub async fn used_subnets(&self) -> Result<Vec<Subnet>> {
        let rows = sqlx::query("SELECT net_subnet FROM vms WHERE net_subnet IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get::<String, _>(0).parse().ok())
            .collect())
    }

    /// Frees the VM's block if it is failed or deleted (a stopped VM keeps it).
    pub async fn release_subnet(&self, id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE vms SET net_subnet = NULL, updated_at = ? WHERE id = ? AND state IN (?, ?)",
        )
        .bind(now_ms())
        .bind(id)
        .bind(VmState::Failed.as_str())
        .bind(VmState::Deleted.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn release_dead_subnets(&self) -> Result<()> {
        sqlx::query(
            "UPDATE vms SET net_subnet = NULL, updated_at = ? \
             WHERE net_subnet IS NOT NULL AND state IN (?, ?)",
        )
        .bind(now_ms())
        .bind(VmState::Failed.as_str())
        .bind(VmState::Deleted.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_net_allow(&self, id: &str, allow: &[String]) -> Result<()> {
        sqlx::query("UPDATE vms SET net_allow = ?, updated_at = ? WHERE id = ?")
            .bind(json_list(allow))
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn json_map(s: &str) -> BTreeMap<String, String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn ts(r: &SqliteRow, col: &str) -> Option<Timestamp> {
    r.get::<Option<i64>, _>(col).map(Timestamp::from_ms)
}

fn vm_from_row(r: &SqliteRow) -> Result<VmRecord> {
    Ok(VmRecord {
        image_id: r.get("image_id"),
        env: json_map(&r.get::<String, _>("env")),
        vm: Vm {
            id: r.get("id"),
            state: parsed(r, "state")?,
            image: r.get("image_name"),
            vcpus: r.get::<i64, _>("vcpus") as u8,
            memory_mib: r.get::<i64, _>("memory_mib") as u32,
            vmm: r.get("vmm"),
            accel: r.get("accel"),
            metadata: json_map(&r.get::<String, _>("metadata")),
            ttl_s: r.get("ttl_s"),
            expires_at: ts(r, "expires_at"),
            idle_timeout_s: r.get("idle_timeout_s"),
            created_at: Timestamp::from_ms(r.get("created_at")),
            ready_at: ts(r, "ready_at"),
            boot_ms: r.get("boot_ms"),
            error: r.get("error"),
            network: r.get::<Option<String>, _>("net_allow").map(|a| {
                vm_network(
                    serde_json::from_str(&a).unwrap_or_default(),
                    r.get("net_subnet"),
                )
            }),
        },
    })
}

fn call_from_row(r: &SqliteRow) -> Result<Call> {
    Ok(Call {
        id: r.get(0),
        kind: parsed(r, "kind")?,
        input: serde_json::from_str(&r.get::<String, _>(2)).unwrap_or_default(),
        exit_code: r.get(3),
        duration_ms: r.get(4),
        error: r.get(5),
        created_at: Timestamp::from_ms(r.get(6)),
    })
}
