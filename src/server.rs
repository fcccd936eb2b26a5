//! `polly serve`: opens the store and drivers, binds the admin, libStorage, storage-offer,
//! CSI and (when configured) Open Service Broker listeners, resolves intents left by a previous run, then serves until the
//! shutdown future fires.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::libstorage::auth::Auth;
use crate::libstorage::{self, LsState};
use crate::store::Store;
use crate::volumes::Manager;

/// One status line on stdout (`polly: ready`, `polly: leader`, the bound addresses), for
/// scripts and supervisors that start `polly serve`. A stdout that is closed or full of
/// errors (the reader went away) must not stop the server, so write errors are ignored
/// (`println!` would panic).
macro_rules! announce {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
        let _ = out.flush();
    }};
}

/// `serve` stopped because this instance no longer leads; the binary exits with
/// [`crate::ha::EXIT_LOST_LEADERSHIP`] so that a supervisor restarts it as a follower. Every
/// other failure is an `anyhow` error with its context.
#[derive(Debug, thiserror::Error)]
#[error("lost leadership (lease expired or fenced): stopping; restart to rejoin as a follower")]
pub struct LostLeadership;

/// Everything opened before any socket is bound: config errors, a locked or newer store and
/// driver set-up failures all surface here.
pub struct Prepared {
    pub config: Config,
    pub manager: Manager,
    /// The façade's JWT policies.
    pub auth: Auth,
    /// The façade's TLS config, when `[libstorage.tls]` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With `[ha]`: the instance's role, whose client forwards to the leader (trusting the
    /// leader's TLS certificate as configured).
    pub role: Option<crate::ha::Role>,
    /// The Open Service Broker's credentials, when `[broker]` has them (else it is off).
    pub broker: Option<crate::broker::Credentials>,
}

/// Load the façade's auth keys and TLS files, open the store and the drivers.
pub fn prepare(config: Config) -> anyhow::Result<Prepared> {
    let auth = Auth::from_config(&config.libstorage)
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
    let tls = match &config.libstorage.tls {
        Some(t) => Some(
            libstorage::tls::server_config(t)
                .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?,
        ),
        None => None,
    };
    let role = if config.ha.enabled {
        let leader_tls = libstorage::tls::leader_client_config(
            config.libstorage.tls.as_ref(),
            config.ha.leader_ca_file.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
        Some(crate::ha::Role::new(leader_tls).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let broker = config
        .broker
        .credentials()
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let store = Store::open_config(&config.store, &config.store_dir())?;
    match store.backend_kind() {
        "etcd" => tracing::info!(
            endpoints = %config.store.etcd.endpoints.join(","),
            prefix = %config.store.etcd.key_prefix(),
            "store: etcd"
        ),
        kind => tracing::info!(dir = %config.store_dir().display(), "store: {kind}"),
    }
    let manager = Manager::new(
        store,
        &config.services,
        &config.data_dir,
        Duration::from_secs(config.driver_timeout_secs),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(Prepared {
        config,
        manager,
        auth,
        tls,
        role,
        broker,
    })
}

/// Serve on already-bound listeners until `shutdown` completes.
pub async fn serve(
    prepared: Prepared,
    admin_listener: TcpListener,
    libstorage_listener: TcpListener,
    offers_listener: TcpListener,
    csi_listener: Option<crate::csi::Listener>,
    broker_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Prepared {
        config,
        manager,
        auth,
        tls,
        role,
        broker,
    } = prepared;
    let token = CancellationToken::new();
    // Watch for shutdown from the start: a stop during start-up reconciliation stops the
    // listeners, and every task started after it sees the cancelled token and returns.
    let t = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        t.cancel();
    });
    let ready = Arc::new(AtomicBool::new(false));
    // With `[ha]`: leader or follower; every API checks it per request.
    let announce = match &role {
        Some(_) => Some(
            crate::ha::LeaderInfo::new(
                config.ha.advertise_host.as_deref(),
                admin_listener.local_addr()?,
                libstorage_listener.local_addr()?,
                tls.is_some(),
                offers_listener.local_addr()?,
            )
            .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let mesos = crate::mesos::client::Handle::new(&config.mesos, manager.metrics().mesos.clone());
    let offers = crate::offer_endpoint::Endpoint::with_master(
        manager.clone(),
        mesos.clone(),
        config.offers.clone(),
        Some(config.mesos.clone()),
    );
    let fencing = crate::fencing::Fencing::new(
        manager.clone(),
        mesos.clone(),
        config.offers.instance_map(),
        config.fencing.clone(),
    );
    // An instance's zone, when REX-Ray did not report one: the Mesos agent standing for it.
    {
        let (agents, store, map) = (
            mesos.clone(),
            manager.store().clone(),
            config.offers.instance_map(),
        );
        manager.set_instance_zones(Arc::new(move |instance_id: &str| {
            let instances = store.instances().ok()?;
            agents
                .agents()
                .into_iter()
                .find(|a| {
                    crate::mesos::agents::agent_instance(a, &instances, &map).as_deref()
                        == Some(instance_id)
                })
                .and_then(|a| a.zone)
        }));
    }
    let admin_app = admin::router(AdminState {
        manager: manager.clone(),
        token: config.admin.token.as_deref().map(Arc::from),
        ready: ready.clone(),
        mesos: mesos.clone(),
        offers: Some(offers.clone()),
        fencing: Some(fencing.clone()),
        role: role.clone(),
    });
    let admin_app = match &role {
        Some(r) => admin_app.layer(axum::middleware::from_fn_with_state(
            r.clone(),
            crate::ha::proxy_admin::<admin::ApiError>,
        )),
        None => admin_app,
    };
    if auth.is_on() {
        tracing::info!("libstorage: JWT authentication on");
    }
    let mut ls_state = LsState::new(manager.clone());
    ls_state.auth = Arc::new(auth);
    ls_state.exe_timeout = Duration::from_millis(config.libstorage.exe_timeout_ms);
    let ls_app = libstorage::router(ls_state);
    let ls_app = match &role {
        Some(r) => ls_app.layer(axum::middleware::from_fn_with_state(
            r.clone(),
            crate::ha::proxy_libstorage::<libstorage::LsError>,
        )),
        None => ls_app,
    };

    let admin_task = tokio::spawn(serve_router(
        admin_listener,
        admin_app,
        config.http.clone(),
        token.clone(),
    ));
    let t = token.clone();
    let ls_task = match tls {
        None => tokio::spawn(serve_router(
            libstorage_listener,
            ls_app,
            config.http.clone(),
            t,
        )),
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let server = axum_server::from_tcp_rustls(
                libstorage_listener.into_std()?,
                axum_server::tls_rustls::RustlsConfig::from_config(tls),
            )?
            .handle(handle.clone());
            tokio::spawn(async move {
                t.cancelled().await;
                handle.graceful_shutdown(None);
            });
            tokio::spawn(async move { server.serve(ls_app.into_make_service()).await })
        }
    };

    // CSI serves from the start too: until this instance leads and has reconciled, its
    // Controller calls answer UNAVAILABLE (a follower's name the leader).
    let csi_task = csi_listener.map(|l| {
        let csi = crate::csi::Csi::new(manager.clone(), ready.clone(), role.clone());
        tokio::spawn(crate::csi::serve(csi, l, token.clone()))
    });

    // The broker too: it answers 503 until this instance leads and has reconciled, then
    // finishes what a previous run left in progress.
    let broker = match (broker, broker_listener) {
        (Some(creds), Some(l)) => {
            let b = crate::broker::Broker::new(
                manager.clone(),
                config.broker.clone(),
                creds,
                ready.clone(),
                role.clone(),
            );
            let task = tokio::spawn(serve_router(
                l,
                b.router(),
                config.http.clone(),
                token.clone(),
            ));
            Some((b, task))
        }
        _ => None,
    };
    let (broker, broker_task) = match broker {
        Some((b, t)) => (Some(b), Some(t)),
        None => (None, None),
    };

    // With `[ha]`, the storage-offer endpoint serves from the start: a follower answers 307.
    let mut offers_listener = Some(offers_listener);
    let mut offers_task = None;
    if let Some(r) = &role {
        let app = offers.router().layer(axum::middleware::from_fn_with_state(
            r.clone(),
            crate::ha::offers_redirect,
        ));
        offers_task = offers_listener
            .take()
            .map(|l| tokio::spawn(serve_router(l, app, config.http.clone(), token.clone())));
    }

    // With `[ha]`: follow until elected; then every store write is fenced by this term.
    #[cfg_attr(not(feature = "etcd"), allow(unused_mut))]
    let mut lost: Option<CancellationToken> = None;
    #[cfg(feature = "etcd")]
    let mut term = None;
    #[cfg(feature = "etcd")]
    if let (Some(role), Some(info)) = (&role, &announce) {
        let ttl = Duration::from_secs(config.ha.lease_ttl_secs);
        let store = manager.store().clone();
        let elected = tokio::select! {
            l = follow_until_elected(&config, ttl, info, role, &store, &ready) => Some(l?),
            _ = token.cancelled() => None,
        };
        match elected {
            Some(leadership) => {
                store.set_fence(Some(leadership.fence.clone()))?;
                let on_lost = leadership.lost();
                store.on_fenced(Arc::new(move |e| {
                    tracing::error!(error = %e, "a store write was fenced: this polly no longer leads");
                    on_lost.cancel();
                }));
                tracing::info!(
                    create_revision = leadership.fence.create_revision,
                    lease = leadership.lease_id,
                    "elected leader"
                );
                announce!("polly: leader");
                lost = Some(leadership.lost());
                term = Some(leadership);
            }
            None => {
                return finish_follower(admin_task, ls_task, offers_task, csi_task, broker_task)
                    .await;
            }
        }
    }
    #[cfg(not(feature = "etcd"))]
    if role.is_some() || announce.is_some() {
        anyhow::bail!(crate::store::ETCD_FEATURE_MISSING);
    }
    let lost_leadership = lost.clone();
    let work = async move {
        #[cfg(feature = "etcd")]
        let term = term;
        if role.is_some() {
            manager.take_over().await?;
        }
        // Start-up reconciliation: finish or roll back what a previous run (or a previous
        // leader) left half done, then compare store and back-ends (orphans, missing).
        // Readiness turns on only after this; the same pass then runs every
        // `reconciler.interval_secs`.
        let interval = config.reconciler.interval();
        let st = manager.reconcile_pass(interval).await?;
        if st.unresolved_intents > 0 {
            tracing::warn!(
                left = st.unresolved_intents,
                "unresolved operation intents; retrying in the background"
            );
        }
        if let Some(r) = &role {
            r.set(crate::ha::RoleState::Leader);
        }
        if !ready.swap(true, Ordering::AcqRel) {
            announce!("polly: ready");
        }
        if let Some(b) = &broker {
            match b.recover() {
                Ok(0) => {}
                Ok(n) => tracing::info!(operations = n, "broker: finishing interrupted operations"),
                Err(e) => {
                    tracing::warn!(error = %e, "broker: cannot read its instances to finish interrupted operations")
                }
            }
        }

        let resolver = tokio::spawn(manager.clone().run_reconciler(interval, token.clone()));
        // Lost nodes, auto-release and interrupted fences, after start-up reconciliation.
        let fencer = tokio::spawn(fencing.run(token.clone()));

        // The storage-offer endpoint; its rounds start after start-up reconciliation, so
        // operations a previous run left pending resume on settled volume records.
        if let Some(l) = offers_listener.take() {
            offers_task = Some(tokio::spawn(serve_router(
                l,
                offers.router(),
                config.http.clone(),
                token.clone(),
            )));
        }
        let offers_rounds = tokio::spawn(offers.run(token.clone()));
        let poller = tokio::spawn(
            manager
                .clone()
                .run_capacity_poller(config.offers.poll_interval(), token.clone()),
        );

        // The Mesos subscription, only when a master is configured (else embedded mode).
        // After a failover it re-subscribes with the framework id kept in the store.
        let mesos_task = if config.mesos.enabled() {
            let client = crate::mesos::client::Client::new(
                config.mesos.clone(),
                manager.store().clone(),
                mesos.clone(),
            )?;
            Some(tokio::spawn(client.run(token.clone())))
        } else {
            None
        };

        admin_task.await?.context("admin server")?;
        ls_task.await?.context("libstorage server")?;
        finish_csi(csi_task).await?;
        if let Some(t) = broker_task {
            t.await?.context("broker")?;
        }
        token.cancel();
        let _ = resolver.await;
        let _ = fencer.await;
        let _ = poller.await;
        let _ = offers_rounds.await;
        if let Some(t) = offers_task {
            t.await?.context("storage-offer endpoint")?;
        }
        if let Some(m) = mesos_task {
            let _ = m.await;
        }
        manager.store().apply(&[])?;
        // A clean stop hands leadership over at once (the lease is revoked).
        #[cfg(feature = "etcd")]
        if let Some(t) = term {
            if let Err(e) = t.resign().await {
                tracing::warn!(error = %e, "could not resign; a follower takes over when the lease expires");
            }
        }
        anyhow::Ok(())
    };
    match lost_leadership {
        // A deposed leader stops at once: nothing waits for its tasks, whose store writes
        // etcd refuses anyway (the fence); a supervisor restarts it as a follower.
        Some(lost) => tokio::select! {
            r = work => r,
            _ = lost.cancelled() => Err(LostLeadership.into()),
        },
        None => work.await,
    }
}

#[cfg(feature = "etcd")]
type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// The CSI server's task, when CSI is served.
type CsiTask = Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>;

/// How long a stopping server waits for CSI connections to close: a client that opened a
/// connection and never finished its HTTP/2 preface must not hold the shutdown.
const CSI_DRAIN: Duration = Duration::from_secs(5);

/// Wait for the CSI server to stop (the token is cancelled by now).
async fn finish_csi(task: CsiTask) -> anyhow::Result<()> {
    let Some(t) = task else {
        return Ok(());
    };
    match tokio::time::timeout(CSI_DRAIN, t).await {
        Ok(r) => r?.context("CSI server"),
        Err(_) => {
            tracing::warn!("CSI connections still open after {CSI_DRAIN:?}; stopping anyway");
            Ok(())
        }
    }
}

/// Serve `app` on `listener` with the `[http]` limits until `token` is cancelled.
async fn serve_router(
    listener: TcpListener,
    app: axum::Router,
    limits: crate::listener::HttpLimits,
    token: CancellationToken,
) -> std::io::Result<()> {
    crate::listener::serve(listener, app, &limits, token.cancelled_owned()).await
}

/// Shut down an instance that never led.
#[cfg(feature = "etcd")]
async fn finish_follower(
    admin_task: ServerTask,
    ls_task: ServerTask,
    offers_task: Option<ServerTask>,
    csi_task: CsiTask,
    broker_task: Option<ServerTask>,
) -> anyhow::Result<()> {
    admin_task.await?.context("admin server")?;
    ls_task.await?.context("libstorage server")?;
    finish_csi(csi_task).await?;
    if let Some(t) = broker_task {
        t.await?.context("broker")?;
    }
    if let Some(t) = offers_task {
        t.await?.context("storage-offer endpoint")?;
    }
    Ok(())
}

/// Campaign; while another instance leads, follow it (forward to it, say where it is) and
/// wait for its key to go, then campaign again. Returns once elected.
#[cfg(feature = "etcd")]
async fn follow_until_elected(
    config: &Config,
    ttl: Duration,
    info: &crate::ha::LeaderInfo,
    role: &crate::ha::Role,
    store: &Store,
    ready: &AtomicBool,
) -> anyhow::Result<crate::store::election::Leadership> {
    use crate::store::election::{Campaign, Election};
    let election = Election::connect(&config.store.etcd, ttl).await?;
    // Until elected, no write of this instance may land.
    store.set_fence(Some(crate::store::Fence {
        key: election.key().to_vec(),
        create_revision: -1,
    }))?;
    let value = serde_json::to_vec(info)?;
    loop {
        match election.campaign(value.clone()).await {
            Ok(Campaign::Won(l)) => return Ok(*l),
            Ok(Campaign::Lost { leader, revision }) => {
                let leader: Option<crate::ha::LeaderInfo> = serde_json::from_slice(&leader).ok();
                match &leader {
                    Some(l) => announce!("polly: follower of {}", l.admin),
                    None => tracing::warn!("the leader key holds no readable address"),
                }
                role.set(crate::ha::RoleState::Follower(leader));
                if !ready.swap(true, Ordering::AcqRel) {
                    announce!("polly: ready");
                }
                if let Err(e) = election.wait_vacant(revision).await {
                    tracing::warn!(error = %e, "watching the leader key failed; campaigning again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "campaign failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        role.set(crate::ha::RoleState::Candidate);
    }
}

/// Bind the configured addresses and serve; prints the bound addresses on stdout.
pub async fn run(
    prepared: Prepared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let admin = TcpListener::bind(prepared.config.admin.listen)
        .await
        .with_context(|| format!("cannot bind admin API on {}", prepared.config.admin.listen))?;
    let ls = TcpListener::bind(prepared.config.libstorage.listen)
        .await
        .with_context(|| {
            format!(
                "cannot bind libStorage façade on {}",
                prepared.config.libstorage.listen
            )
        })?;
    announce!("polly: admin API on http://{}", admin.local_addr()?);
    let scheme = if prepared.tls.is_some() {
        "https"
    } else {
        "http"
    };
    announce!("polly: libStorage on {scheme}://{}", ls.local_addr()?);
    let offers = TcpListener::bind(prepared.config.offers.listen)
        .await
        .with_context(|| {
            format!(
                "cannot bind the storage-offer endpoint on {}",
                prepared.config.offers.listen
            )
        })?;
    announce!("polly: storage offers on http://{}", offers.local_addr()?);
    let csi = if prepared.config.csi.enabled {
        let endpoint = prepared.config.csi.endpoint(&prepared.config.data_dir);
        let l = crate::csi::bind(&endpoint).await?;
        announce!("polly: CSI on {}", l.endpoint()?);
        Some(l)
    } else {
        None
    };
    let broker = if prepared.broker.is_some() {
        let listen = prepared.config.broker.listen;
        let l = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot bind the Open Service Broker on {listen}"))?;
        announce!("polly: broker on http://{}", l.local_addr()?);
        Some(l)
    } else {
        tracing::info!(
            "broker: off (set [broker] username and password to serve the Open Service Broker API)"
        );
        None
    };
    serve(prepared, admin, ls, offers, csi, broker, shutdown).await
}
