//! The `fault` driver: wraps another driver and injects latency, errors and hangs, so tests
//! and operators can see how Polly behaves when a back-end is slow, flaky or stuck. With
//! `active_while_exists` the faults are switched on and off at run time by a file, so an
//! outage can start and end while Polly keeps running.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{
    AttachOptions, CreateRequest, Driver, DriverAttachment, DriverVolume, DynDriver, Error, Listed,
    PoolCapacity, Result, Snapshot,
};

/// Names of the `Driver` methods faults can target, as used in `FaultConfig::hang` and in
/// injected error messages.
pub const METHODS: &[&str] = &[
    "capacity",
    "list",
    "inspect",
    "create",
    "remove",
    "attach",
    "detach",
    "force_detach",
    "snapshot_create",
    "snapshot_copy",
    "snapshot_list",
    "snapshot_remove",
    "create_from_snapshot",
    "copy",
    "grow",
    "resolve_instance",
];

/// When a hanging method stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangPhase {
    /// Hang before calling the inner driver: the call never has an effect.
    #[default]
    Before,
    /// Call the inner driver, then hang: the effect happens but the caller never hears of it
    /// (a lost reply).
    After,
}

/// What to inject. Can be replaced at run time with `FaultDriver::set_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Delay added to every call.
    pub latency_ms: u64,
    /// Probability (0..=1) that a call fails with `Unavailable` before reaching the inner driver.
    pub error_rate: f64,
    /// Methods (see `METHODS`) that never return.
    pub hang: Vec<String>,
    /// When non-empty, a `hang` method hangs only for calls whose subject contains one of
    /// these strings: the new volume's name for create, create_from_snapshot and copy, the
    /// volume or snapshot id otherwise. Calls without a subject (capacity, list, snapshot_list
    /// of every volume) then never hang. Lets a test stick one volume while others proceed.
    pub hang_only: Vec<String>,
    pub hang_phase: HangPhase,
    /// Seed for the error dice, for reproducible runs; `None` = seeded from the OS.
    pub seed: Option<u64>,
    /// File to which every side-effecting call that reached the inner driver appends one
    /// line, `<method> <id or name> <ok|err>`, so tests can count back-end side effects
    /// across restarts (e.g. that a detach happened exactly once).
    pub call_log: Option<std::path::PathBuf>,
    /// When set, every fault above applies only while this file exists: create it to take
    /// the back-end down, remove it to bring it back, without restarting Polly. Calls already
    /// hanging stay hung.
    pub active_while_exists: Option<PathBuf>,
}

impl FaultConfig {
    /// Checks the rate is a probability and every hang name is a driver method.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "fault error_rate {} must be between 0 and 1",
                self.error_rate
            ));
        }
        if let Some(bad) = self.hang.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(format!(
                "fault hang method {bad:?} is not a driver method; expected one of {}",
                METHODS.join(", ")
            ));
        }
        Ok(())
    }

    /// Whether a call of `method` about `subject` is one to hang.
    fn hangs(&self, method: &str, subject: Option<&str>) -> bool {
        self.hang.iter().any(|m| m == method)
            && (self.hang_only.is_empty()
                || subject.is_some_and(|s| self.hang_only.iter().any(|p| s.contains(p.as_str()))))
    }
}

/// A driver that misbehaves on purpose, as its `FaultConfig` says, around an inner driver.
pub struct FaultDriver {
    inner: DynDriver,
    state: Mutex<State>,
}

struct State {
    cfg: FaultConfig,
    rng: StdRng,
}

impl std::fmt::Debug for FaultDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultDriver")
            .field("inner", &self.inner.kind())
            .finish_non_exhaustive()
    }
}

fn rng_for(cfg: &FaultConfig) -> StdRng {
    match cfg.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    }
}

impl FaultDriver {
    pub fn new(inner: DynDriver, cfg: FaultConfig) -> FaultDriver {
        let rng = rng_for(&cfg);
        FaultDriver {
            inner,
            state: Mutex::new(State { cfg, rng }),
        }
    }

    /// Replaces the faults to inject; calls already hanging stay hung.
    pub fn set_config(&self, cfg: FaultConfig) {
        let rng = rng_for(&cfg);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = State { cfg, rng };
    }

    /// The faults currently injected.
    pub fn config(&self) -> FaultConfig {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cfg
            .clone()
    }

    /// Whether the faults are switched on (always, unless `active_while_exists` names a file
    /// that is absent).
    fn active(cfg: &FaultConfig) -> bool {
        // One stat per driver call: negligible beside any real back-end call.
        cfg.active_while_exists.as_ref().is_none_or(|p| p.exists())
    }

    /// Runs before the inner call: latency, then maybe an error, then maybe a hang.
    async fn before(&self, method: &'static str, subject: Option<&str>) -> Result<()> {
        // Decide everything under the lock, then release it before awaiting.
        let (latency_ms, fail, hang) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if !Self::active(&state.cfg) {
                return Ok(());
            }
            let rate = state.cfg.error_rate;
            let fail = rate > 0.0 && state.rng.random::<f64>() < rate;
            let hang =
                state.cfg.hang_phase == HangPhase::Before && state.cfg.hangs(method, subject);
            (state.cfg.latency_ms, fail, hang)
        };
        if latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(latency_ms)).await;
        }
        if fail {
            return Err(Error::Unavailable(format!("injected fault in {method}")));
        }
        if hang {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    /// Appends `method subject ok|err` to the call log, if one is configured.
    fn note<T>(&self, method: &str, subject: &str, out: &Result<T>) {
        let path = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.cfg.call_log.clone()
        };
        let Some(path) = path else { return };
        let line = format!(
            "{method} {subject} {}\n",
            if out.is_ok() { "ok" } else { "err" }
        );
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), error = %e, "fault driver: cannot append to the call log");
        }
    }

    /// Runs after the inner call: maybe a hang, so its result is never delivered.
    async fn after(&self, method: &'static str, subject: Option<&str>) {
        let hang = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            Self::active(&state.cfg)
                && state.cfg.hang_phase == HangPhase::After
                && state.cfg.hangs(method, subject)
        };
        if hang {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Driver for FaultDriver {
    fn kind(&self) -> &str {
        // libStorage clients keep seeing the wrapped back-end's kind.
        self.inner.kind()
    }

    fn can_copy_snapshots(&self) -> bool {
        self.inner.can_copy_snapshots()
    }

    async fn take_over(&self) -> Result<()> {
        self.inner.take_over().await
    }

    /// A lookup, not a back-end call: no fault applies.
    async fn node_source(&self, id: &str, device: Option<&str>) -> Result<crate::mount::Source> {
        self.inner.node_source(id, device).await
    }

    async fn capacity(&self) -> Result<Vec<PoolCapacity>> {
        self.before("capacity", None).await?;
        let out = self.inner.capacity().await;
        self.after("capacity", None).await;
        out
    }

    async fn list(&self) -> Result<Vec<DriverVolume>> {
        self.before("list", None).await?;
        let out = self.inner.list().await;
        self.after("list", None).await;
        out
    }

    /// An inventory is a listing: the faults configured for `list` apply to it.
    async fn inventory(&self) -> Result<Vec<Listed>> {
        self.before("list", None).await?;
        let out = self.inner.inventory().await;
        self.after("list", None).await;
        out
    }

    async fn inspect(&self, id: &str) -> Result<DriverVolume> {
        self.before("inspect", Some(id)).await?;
        let out = self.inner.inspect(id).await;
        self.after("inspect", Some(id)).await;
        out
    }

    async fn create(&self, req: &CreateRequest) -> Result<DriverVolume> {
        self.before("create", Some(&req.name)).await?;
        let out = self.inner.create(req).await;
        self.note("create", &req.name, &out);
        self.after("create", Some(&req.name)).await;
        out
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.before("remove", Some(id)).await?;
        let out = self.inner.remove(id).await;
        self.note("remove", id, &out);
        self.after("remove", Some(id)).await;
        out
    }

    async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        opts: &AttachOptions,
    ) -> Result<DriverAttachment> {
        self.before("attach", Some(id)).await?;
        let out = self.inner.attach(id, instance_id, opts).await;
        self.note("attach", id, &out);
        self.after("attach", Some(id)).await;
        out
    }

    async fn detach(&self, id: &str, instance_id: &str) -> Result<()> {
        self.before("detach", Some(id)).await?;
        let out = self.inner.detach(id, instance_id).await;
        self.note("detach", id, &out);
        self.after("detach", Some(id)).await;
        out
    }

    async fn force_detach(&self, id: &str) -> Result<()> {
        self.before("force_detach", Some(id)).await?;
        let out = self.inner.force_detach(id).await;
        self.note("force_detach", id, &out);
        self.after("force_detach", Some(id)).await;
        out
    }

    async fn snapshot_create(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
        self.before("snapshot_create", Some(volume_id)).await?;
        let out = self.inner.snapshot_create(volume_id, name).await;
        self.after("snapshot_create", Some(volume_id)).await;
        out
    }

    async fn snapshot_copy(&self, snapshot_id: &str, name: &str) -> Result<Snapshot> {
        self.before("snapshot_copy", Some(snapshot_id)).await?;
        let out = self.inner.snapshot_copy(snapshot_id, name).await;
        self.after("snapshot_copy", Some(snapshot_id)).await;
        out
    }

    async fn snapshot_list(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
        self.before("snapshot_list", volume_id).await?;
        let out = self.inner.snapshot_list(volume_id).await;
        self.after("snapshot_list", volume_id).await;
        out
    }

    async fn snapshot_remove(&self, snapshot_id: &str) -> Result<()> {
        self.before("snapshot_remove", Some(snapshot_id)).await?;
        let out = self.inner.snapshot_remove(snapshot_id).await;
        self.after("snapshot_remove", Some(snapshot_id)).await;
        out
    }

    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
        self.before("create_from_snapshot", Some(&req.name)).await?;
        let out = self.inner.create_from_snapshot(snapshot_id, req).await;
        self.after("create_from_snapshot", Some(&req.name)).await;
        out
    }

    async fn copy(&self, volume_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        self.before("copy", Some(&req.name)).await?;
        let out = self.inner.copy(volume_id, req).await;
        self.after("copy", Some(&req.name)).await;
        out
    }

    async fn grow(&self, id: &str, new_size_bytes: u64) -> Result<DriverVolume> {
        self.before("grow", Some(id)).await?;
        let out = self.inner.grow(id, new_size_bytes).await;
        self.note("grow", id, &out);
        self.after("grow", Some(id)).await;
        out
    }

    async fn resolve_instance(&self, host: &str) -> Result<Option<String>> {
        self.before("resolve_instance", Some(host)).await?;
        let out = self.inner.resolve_instance(host).await;
        self.after("resolve_instance", Some(host)).await;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::vfs::{VfsConfig, VfsDriver};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn req(name: &str) -> CreateRequest {
        CreateRequest {
            name: name.to_string(),
            size_bytes: 1024,
            pool: None,
            zone: None,
            access_mode: Default::default(),
            fields: BTreeMap::new(),
        }
    }

    fn setup(cfg: FaultConfig) -> (tempfile::TempDir, DynDriver, FaultDriver) {
        let dir = tempfile::tempdir().unwrap();
        let vfs: DynDriver = Arc::new(VfsDriver::open(VfsConfig::new(dir.path())).unwrap());
        let fault = FaultDriver::new(vfs.clone(), cfg);
        (dir, vfs, fault)
    }

    #[tokio::test]
    async fn error_rate_one_always_fails() {
        let (_dir, vfs, fault) = setup(FaultConfig {
            error_rate: 1.0,
            ..Default::default()
        });
        for i in 0..50 {
            let err = fault.create(&req(&format!("v{i}"))).await.unwrap_err();
            assert_eq!(err, Error::Unavailable("injected fault in create".into()));
        }
        assert!(matches!(fault.list().await, Err(Error::Unavailable(_))));
        // Injected failures never reach the back-end.
        assert!(vfs.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn error_rate_zero_never_fails() {
        let (_dir, _vfs, fault) = setup(FaultConfig::default());
        for i in 0..50 {
            fault.create(&req(&format!("v{i}"))).await.unwrap();
        }
        assert_eq!(fault.list().await.unwrap().len(), 50);
    }

    #[tokio::test]
    async fn seeded_error_rate_is_reproducible_and_partial() {
        let cfg = FaultConfig {
            error_rate: 0.5,
            seed: Some(7),
            ..Default::default()
        };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (_dir, _vfs, fault) = setup(cfg.clone());
            let mut outcomes = Vec::new();
            for _ in 0..40 {
                outcomes.push(fault.capacity().await.is_ok());
            }
            runs.push(outcomes);
        }
        assert_eq!(runs[0], runs[1]);
        assert!(runs[0].iter().any(|ok| *ok) && runs[0].iter().any(|ok| !*ok));
    }

    #[tokio::test]
    async fn hang_before_has_no_side_effect() {
        let (_dir, vfs, fault) = setup(FaultConfig {
            hang: vec!["create".into()],
            hang_phase: HangPhase::Before,
            ..Default::default()
        });
        let res = tokio::time::timeout(Duration::from_millis(200), fault.create(&req("a"))).await;
        assert!(res.is_err(), "create should hang");
        assert!(vfs.list().await.unwrap().is_empty());
        // Methods not named keep working.
        assert!(fault.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn hang_after_keeps_the_side_effect() {
        let (_dir, vfs, fault) = setup(FaultConfig {
            hang: vec!["create".into()],
            hang_phase: HangPhase::After,
            ..Default::default()
        });
        let res = tokio::time::timeout(Duration::from_secs(2), fault.create(&req("a"))).await;
        assert!(res.is_err(), "create should hang");
        let vols = vfs.list().await.unwrap();
        assert_eq!(vols.len(), 1);
        assert_eq!(vols[0].name, "a");
    }

    #[tokio::test]
    async fn hang_only_sticks_the_matching_subjects_alone() {
        let (_dir, vfs, fault) = setup(FaultConfig {
            hang: vec!["create".into(), "attach".into()],
            hang_only: vec!["stuck".into()],
            ..Default::default()
        });
        let t = Duration::from_millis(200);
        let res = tokio::time::timeout(t, fault.create(&req("stuck-1"))).await;
        assert!(res.is_err(), "create of a matching name should hang");
        let v = fault.create(&req("free")).await.unwrap();
        assert_eq!(vfs.list().await.unwrap().len(), 1);
        // The id "vfs-…" does not match, so attach goes through; a matching id would hang.
        fault
            .attach(&v.id, "i", &AttachOptions::default())
            .await
            .unwrap();
        fault.set_config(FaultConfig {
            hang: vec!["attach".into(), "list".into()],
            hang_only: vec![v.id.clone()],
            ..Default::default()
        });
        let res =
            tokio::time::timeout(t, fault.attach(&v.id, "j", &AttachOptions::default())).await;
        assert!(res.is_err(), "attach of the matching id should hang");
        // Calls without a subject never hang when hang_only is set.
        assert_eq!(fault.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn set_config_changes_behaviour_at_run_time() {
        let (_dir, _vfs, fault) = setup(FaultConfig {
            error_rate: 1.0,
            ..Default::default()
        });
        assert!(fault.list().await.is_err());
        fault.set_config(FaultConfig::default());
        assert!(fault.list().await.is_ok());
        assert_eq!(fault.config(), FaultConfig::default());
    }

    #[tokio::test]
    async fn latency_is_added() {
        let (_dir, _vfs, fault) = setup(FaultConfig {
            latency_ms: 50,
            ..Default::default()
        });
        let start = std::time::Instant::now();
        fault.list().await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn call_log_counts_calls_that_reached_the_back_end() {
        let log = tempfile::NamedTempFile::new().unwrap();
        let (_dir, _vfs, fault) = setup(FaultConfig {
            call_log: Some(log.path().to_path_buf()),
            ..Default::default()
        });
        let v = fault.create(&req("a")).await.unwrap();
        fault.force_detach(&v.id).await.unwrap();
        fault.remove("nope").await.unwrap();
        fault.list().await.unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(
            text,
            format!("create a ok\nforce_detach {} ok\nremove nope ok\n", v.id)
        );
    }

    #[tokio::test]
    async fn a_switch_file_turns_the_faults_on_and_off() {
        let switch = tempfile::tempdir().unwrap();
        let path = switch.path().join("down");
        let (_dir, _vfs, fault) = setup(FaultConfig {
            error_rate: 1.0,
            active_while_exists: Some(path.clone()),
            ..Default::default()
        });
        assert!(fault.capacity().await.is_ok(), "no file: no faults");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            fault.capacity().await.unwrap_err(),
            Error::Unavailable("injected fault in capacity".into())
        );
        assert!(fault.create(&req("a")).await.is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(fault.capacity().await.is_ok());
        assert_eq!(fault.create(&req("a")).await.unwrap().name, "a");
    }

    #[tokio::test]
    async fn a_switched_off_hang_after_lets_the_reply_through() {
        let switch = tempfile::tempdir().unwrap();
        let (_dir, _vfs, fault) = setup(FaultConfig {
            hang: vec!["create".into()],
            hang_phase: HangPhase::After,
            active_while_exists: Some(switch.path().join("absent")),
            ..Default::default()
        });
        let res = tokio::time::timeout(Duration::from_secs(5), fault.create(&req("a"))).await;
        assert_eq!(res.expect("no hang while switched off").unwrap().name, "a");
    }

    #[test]
    fn kind_is_the_inner_kind() {
        let (_dir, _vfs, fault) = setup(FaultConfig::default());
        assert_eq!(fault.kind(), "vfs");
    }

    #[test]
    fn validate_rejects_bad_rate_and_unknown_methods() {
        let ok = FaultConfig {
            error_rate: 1.0,
            hang: METHODS.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        for rate in [-0.1, 1.5, f64::NAN] {
            let cfg = FaultConfig {
                error_rate: rate,
                ..Default::default()
            };
            assert!(cfg.validate().is_err(), "rate {rate} accepted");
        }
        let cfg = FaultConfig {
            hang: vec!["mount".into()],
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("\"mount\""), "{err}");
    }

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_fields() {
        let cfg: FaultConfig =
            serde_json::from_str(r#"{"hang": ["attach"], "hang_phase": "after"}"#).unwrap();
        assert_eq!(cfg.hang, vec!["attach".to_string()]);
        assert_eq!(cfg.hang_phase, HangPhase::After);
        assert_eq!(cfg.error_rate, 0.0);
        assert!(serde_json::from_str::<FaultConfig>(r#"{"latency": 5}"#).is_err());
    }
}
