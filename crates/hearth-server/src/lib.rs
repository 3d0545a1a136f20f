//! `hearth serve`: the manager. HTTP handlers ([`routes`]) only parse and validate into
//! `hearth-api` types and call [`vms`], [`images`], [`jobs`] and [`auth`]; every change to
//! a VM goes through that VM's owner task ([`owner`]), and the store ([`store`], all the
//! SQL) is written before anything is acted on.
//!
//! # Running VMs across a server stop
//! A graceful stop (SIGTERM, Ctrl-C) **leaves VMs running**: their processes live in their
//! own sessions and keep serving. The next start re-adopts every `running` VM whose
//! processes are still alive (`VmHandle::adopt`) and marks the others `failed`, cleaning
//! their files. A SIGKILLed server recovers the same way. See [`reconcile`].

pub mod activity;
pub mod auth;
pub mod config;
pub mod error;
pub mod image_ops;
pub mod images;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod network;
pub mod owner;
pub mod pool;
pub mod reconcile;
pub mod routes;
pub mod store;
mod ui;
pub mod vms;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::Router;
use tokio::sync::{Mutex, OnceCell, Semaphore};

pub use config::Config;
pub use error::{AppError, Result};

/// Shared state of every handler and owner task. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub config: Config,
    pub store: store::Store,
    pub keys: auth::KeyCache,
    /// Command channels of the VM owner tasks, by VM id.
    pub owners: std::sync::Mutex<HashMap<String, owner::OwnerTx>>,
    /// Chosen on first use so a server (or a test) that never boots a VM never probes.
    vmm: OnceCell<Arc<dyn hearth_vmm::Vmm>>,
    /// Boots running now; more than `max_concurrent_boots` are refused with 429.
    pub boots: Arc<Semaphore>,
    /// Serializes "count live VMs, then insert" so `max_vms` cannot be overshot.
    pub create_lock: Mutex<()>,
    pub metrics: metrics::Metrics,
    /// Job queue wake-up and the cancel switches of running jobs.
    pub jobs: jobs::JobRuntime,
    /// VM networking from `HEARTH_NET_*`; probed on the first request that wants a NIC.
    pub net: network::NetRuntime,
    /// What requests are validated against (and what `/openapi.json` shows).
    pub api_limits: hearth_api::Limits,
    /// Warm VMs waiting to be claimed by a create.
    pub pool: pool::Pool,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    /// Opens (and migrates) the store under `config.data_dir`.
    pub async fn new(config: Config) -> Result<AppState> {
        for dir in [
            config.data_dir.clone(),
            config.vms_dir(),
            config.images_dir(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| AppError::io(format!("creating {}", dir.display()), e))?;
        }
        let store = store::Store::open(&config.db_path()).await?;
        let keys = auth::KeyCache::default();
        keys.reload(&store).await?;
        let net = network::NetRuntime::from_env();
        let api_limits = config.api_limits(net.is_configured());
        Ok(AppState {
            inner: Arc::new(Inner {
                boots: Arc::new(Semaphore::new(config.limits.max_concurrent_boots as usize)),
                pool: pool::Pool::new(&config.pool, &config.defaults),
                config,
                store,
                keys,
                owners: Default::default(),
                vmm: OnceCell::new(),
                create_lock: Mutex::new(()),
                metrics: Default::default(),
                jobs: Default::default(),
                net,
                api_limits,
            }),
        })
    }

    /// The VMM backend, selected from the config and the environment on first use.
    pub async fn vmm(&self) -> Result<Arc<dyn hearth_vmm::Vmm>> {
        self.vmm
            .get_or_try_init(|| async {
                let sel = self.config.selection()?;
                let vmm = hearth_vmm::select(&sel)?;
                tracing::info!(vmm = %vmm.kind(), accel = %vmm.accel(), "VMM selected");
                Ok::<_, AppError>(Arc::from(vmm))
            })
            .await
            .cloned()
    }
}

/// The whole HTTP surface. Tests call it in-process with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    let doc = routes::openapi::document(&state.api_limits);
    let doc = bytes::Bytes::from(serde_json::to_vec(&doc).expect("the document serialises"));
    let protected = routes::protected().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_key,
    ));
    let (router, _) = routes::public().merge(protected).split_for_parts();
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
            }),
        )
        .merge(ui::routes())
        .fallback(routes::no_route)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.limits.max_json_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .layer(axum::middleware::from_fn(routes::finish_response))
        .with_state(state)
}

/// Opens the state, reconciles, binds and serves until SIGTERM / Ctrl-C.
pub async fn serve(config: Config) -> Result<()> {
    let listen = config.listen;
    let state = AppState::new(config).await?;
    auth::bootstrap_admin_key(&state, &state.config.admin_key_path()).await?;
    images::register_on_start(&state).await?;
    reconcile::reconcile(&state).await?;
    // After reconcile: it re-adopts job VMs that outlived us, which recovery destroys.
    jobs::recover(&state).await?;
    jobs::start_workers(&state);
    tokio::spawn(pool::run(state.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| AppError::io(format!("binding {listen}"), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| AppError::io("local address", e))?;
    // Tests start the server on port 0 and read this line to learn the port.
    tracing::info!(%addr, data_dir = %state.config.data_dir.display(), "listening");
    println!("hearth: listening on http://{addr}");
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| AppError::io("serving", e))?;
    tracing::info!("shut down; running VMs were left running and are re-adopted on start");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown signal received");
}
