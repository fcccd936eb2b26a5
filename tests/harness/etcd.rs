//! A real etcd (Debian's `etcd-server`, or `POLLY_TEST_ETCD`) on loopback on free ports with
//! its data in a temp dir. A server is killed when its handle drops, and a watcher kills it
//! when the test process exits (so the shared one never outlives the run). Without an etcd
//! binary the tests skip with a loud message, except under `CI`, where a missing etcd fails
//! them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The etcd binary: `POLLY_TEST_ETCD`, else `etcd` on `PATH`, else `/usr/bin/etcd`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("POLLY_TEST_ETCD") {
        return Some(PathBuf::from(p));
    }
    for candidate in ["etcd", "/usr/bin/etcd"] {
        let ok = Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(PathBuf::from(candidate));
        }
    }
    None
}

/// `None` when etcd can run here; otherwise why not (printed loudly). Panics under `CI`.
pub fn skip() -> Option<String> {
    if binary().is_some() {
        return None;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the etcd store tests: install etcd (apt-get install etcd-server; .ci/run does) or set POLLY_TEST_ETCD"
    );
    let why = "etcd not installed (apt-get install etcd-server, or set POLLY_TEST_ETCD): the etcd store tests did NOT run";
    eprintln!("\n*** skipped: {why} ***\n");
    Some(why.into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Etcd {
    child: Option<Child>,
    watcher: Option<Child>,
    /// The temp dir holding `data/` and `etcd.log`.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    client_port: u16,
    peer_port: u16,
    /// Extra flags (TLS, ...), kept for restarts.
    extra: Vec<String>,
    scheme: &'static str,
}

impl Etcd {
    /// A new etcd in its own temp dir. Panics if it does not become healthy.
    pub fn start() -> Etcd {
        Self::start_with(&[], "http")
    }

    /// A new etcd with extra flags; `scheme` is that of its client URL (`https` with TLS).
    pub fn start_with(extra: &[&str], scheme: &'static str) -> Etcd {
        Self::start_under(&std::env::temp_dir(), extra, scheme)
    }

    /// As [`Etcd::start_with`], with the temp dir under `base` (benchmarks put etcd's data
    /// on the same disk as sled's).
    pub fn start_under(base: &Path, extra: &[&str], scheme: &'static str) -> Etcd {
        let tmp = tempfile::tempdir_in(base).unwrap();
        let mut e = Etcd {
            child: None,
            watcher: None,
            dir: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
            client_port: 0,
            peer_port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            scheme,
        };
        for attempt in 0.. {
            e.client_port = free_port();
            e.peer_port = free_port();
            if e.spawn() {
                return e;
            }
            assert!(attempt < 3, "etcd did not start; see {}", e.log().display());
        }
        unreachable!()
    }

    /// The etcd every test of this process shares (each test uses its own key prefix).
    pub fn shared() -> &'static Etcd {
        static SHARED: OnceLock<Etcd> = OnceLock::new();
        SHARED.get_or_init(Etcd::start)
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// Start etcd on the current ports and data dir; false if it exited before serving.
    fn spawn(&mut self) -> bool {
        let bin = binary().expect("etcd binary");
        let client = format!("{}://127.0.0.1:{}", self.scheme, self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut child = Command::new(bin)
            .args(["--name", "polly-test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("polly-test={peer}")])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let watcher = Command::new("sh")
            .args([
                "-c",
                r#"while kill -0 "$0" 2>/dev/null && kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -9 "$1" 2>/dev/null"#,
            ])
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut up = false;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if self.healthy() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if up {
            self.child = Some(child);
            self.watcher = Some(watcher);
            return true;
        }
        let exited = child.try_wait().unwrap().is_some();
        for mut c in [child, watcher] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(
            exited,
            "etcd not healthy within 30 s; see {}",
            self.log().display()
        );
        false
    }

    /// The client port answers and etcd has a leader (a TCP probe for TLS servers).
    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        if self.scheme == "https" {
            // Serving TLS: give it a moment to elect itself; clients retry anyway.
            std::thread::sleep(Duration::from_millis(500));
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains(r#""health":"true""#)
    }

    /// SIGKILL: no shutdown, whatever etcd had not fsynced is lost.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut w) = self.watcher.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// Start again on the same data dir and ports (after [`Etcd::kill9`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill9 first");
        assert!(
            self.spawn(),
            "etcd did not restart; see {}",
            self.log().display()
        );
    }

    /// Run `etcdctl` (API v3) against this server; returns stdout, panics on failure.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url()])
            .args(args)
            .output()
            .expect("run etcdctl (apt-get install etcd-client)");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A key prefix no other test of this run uses.
pub fn unique_prefix(test: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "/polly-test/{}-{}-{test}/",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A test's part of the shared etcd: its own key prefix and temp root, and the servers it
/// started on them.
pub struct Cluster<P> {
    pub etcd: &'static Etcd,
    pub prefix: String,
    /// Holds what the servers share on disk (e.g. the `vfs` roots).
    pub root: tempfile::TempDir,
    /// The config every server was started with.
    pub config: String,
    pub nodes: Vec<P>,
}

/// `n` servers on the shared etcd under a new prefix (named after `tag`), each started by
/// `start` with the config `config(etcd url, prefix, temp root)` returns. `None` when etcd
/// cannot run here (the skip is printed loudly; under `CI` it panics instead).
pub fn cluster<P>(
    n: usize,
    tag: &str,
    config: impl FnOnce(&str, &str, &Path) -> String,
    start: impl Fn(&str) -> P,
) -> Option<Cluster<P>> {
    if skip().is_some() {
        return None;
    }
    let etcd = Etcd::shared();
    let prefix = unique_prefix(tag);
    let root = tempfile::tempdir().unwrap();
    let config = config(&etcd.url(), &prefix, root.path());
    let nodes = (0..n).map(|_| start(&config)).collect();
    Some(Cluster {
        etcd,
        prefix,
        root,
        config,
        nodes,
    })
}
