//! Prometheus text metrics, written by hand: three families do not justify a registry crate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::Result;
use crate::models::VmState;
use crate::AppState;

/// Upper bounds (seconds) of the boot-time histogram: TCG boots take seconds, KVM ones
/// a fraction of one.
const BOOT_BUCKETS: [f64; 10] = [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 30.0, 60.0];

#[derive(Default)]
pub struct Metrics {
    /// (method, route pattern, status) -> count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    boot: Mutex<BootHistogram>,
}

#[derive(Default)]
struct BootHistogram {
    buckets: [u64; BOOT_BUCKETS.len()],
    count: u64,
    sum_s: f64,
}

impl Metrics {
    pub fn observe_boot(&self, ms: i64) {
        let s = ms as f64 / 1000.0;
        let mut h = self.boot.lock().expect("metrics poisoned");
        for (i, le) in BOOT_BUCKETS.iter().enumerate() {
            if s <= *le {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum_s += s;
    }
}

/// Counts every routed request by its route pattern (not the raw path: ids would make
/// one series per VM).
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let key = (method, route, resp.status().as_u16());
    *state
        .metrics
        .requests
        .lock()
        .expect("metrics poisoned")
        .entry(key)
        .or_default() += 1;
    resp
}

pub async fn render(state: &AppState) -> Result<String> {
    let mut out = String::new();
    let vms = state.store.list_vms(&[]).await?;
    out.push_str("# HELP hearth_vms VMs by state.\n# TYPE hearth_vms gauge\n");
    for s in VmState::ALL {
        let n = vms.iter().filter(|v| v.state == s).count();
        let _ = writeln!(out, "hearth_vms{{state=\"{s}\"}} {n}");
    }
    out.push_str(
        "# HELP hearth_http_requests_total HTTP requests by route and status.\n\
         # TYPE hearth_http_requests_total counter\n",
    );
    for ((m, r, st), n) in state
        .metrics
        .requests
        .lock()
        .expect("metrics poisoned")
        .iter()
    {
        let _ = writeln!(
            out,
            "hearth_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{st}\"}} {n}"
        );
    }
    out.push_str(
        "# HELP hearth_vm_boot_seconds Time from VMM start to agent ready, since server start.\n\
         # TYPE hearth_vm_boot_seconds histogram\n",
    );
    let h = state.metrics.boot.lock().expect("metrics poisoned");
    for (le, n) in BOOT_BUCKETS.iter().zip(h.buckets.iter()) {
        let _ = writeln!(out, "hearth_vm_boot_seconds_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "hearth_vm_boot_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "hearth_vm_boot_seconds_sum {}", h.sum_s);
    let _ = writeln!(out, "hearth_vm_boot_seconds_count {}", h.count);
    drop(h);
    let (hits, misses) = state.pool.claims();
    out.push_str(
        "# HELP hearth_pool_claims_total Creates of a pooled spec: served by a warm VM (hit) \
         or booted cold (miss).\n# TYPE hearth_pool_claims_total counter\n",
    );
    let _ = writeln!(out, "hearth_pool_claims_total{{result=\"hit\"}} {hits}");
    let _ = writeln!(out, "hearth_pool_claims_total{{result=\"miss\"}} {misses}");
    out.push_str("# HELP hearth_pool_vms Warm VMs by state.\n# TYPE hearth_pool_vms gauge\n");
    let specs = state.pool.status();
    let ready: u32 = specs.iter().map(|s| s.ready).sum();
    let booting: u32 = specs.iter().map(|s| s.booting).sum();
    let _ = writeln!(out, "hearth_pool_vms{{state=\"ready\"}} {ready}");
    let _ = writeln!(out, "hearth_pool_vms{{state=\"booting\"}} {booting}");
    Ok(out)
}
