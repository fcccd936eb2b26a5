//! The `polly serve` process under test: started on 127.0.0.1:0 with a data dir of the
//! test's choosing (or a temp dir it owns), its addresses learnt from stdout, stopped by
//! SIGKILL or SIGTERM on demand.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_polly");

pub struct Polly {
    child: Child,
    pub admin: String,
    pub libstorage: String,
    /// The storage-offer endpoint (Mesos v1 scheduler API), `http://ADDR`.
    pub offers: String,
    /// The CSI endpoint, `unix://PATH` (a socket beside the data dir) or `tcp://ADDR`.
    pub csi: String,
    /// The Open Service Broker's base URL, `http://ADDR`, when `[broker]` is configured
    /// (`polly: broker on http://ADDR`); `None` when the server printed no such line.
    pub broker: Option<String>,
    pub data_dir: PathBuf,
    pub token: Option<String>,
    /// Started under a prefix command ([`Polly::start_wrapped`]).
    wrapped: bool,
    /// The client of the HTTP helpers ([`Polly::req`], [`Polly::admin_get`], ...). A fresh
    /// connection per request: after a refused oversize body the server closes the
    /// connection, and a pooled one would fail the next request client-side.
    pub(super) http: reqwest::Client,
    /// The temp dir holding `data_dir` when the harness made it ([`Polly::start_config`]).
    /// Fields drop after [`Drop::drop`] has killed the process, so it never goes first.
    dir: Option<tempfile::TempDir>,
}

impl Polly {
    /// Start with the default config (one `vfs` service) in `data_dir`.
    pub fn start(data_dir: &Path) -> Polly {
        Self::start_with(data_dir, None, None)
    }

    /// Start with a TOML config (written next to the data dir) and an optional admin token.
    pub fn start_with(data_dir: &Path, config: Option<&str>, token: Option<&str>) -> Polly {
        Self::launch(data_dir, config, token, None)
    }

    /// Start with `FAILPOINTS=<failpoints>` armed (a build with `--features failpoints`); its
    /// stderr goes to [`stderr_log`] so a test can see which point crashed it.
    pub fn start_failing(data_dir: &Path, config: Option<&str>, failpoints: &str) -> Polly {
        Self::launch(data_dir, config, None, Some(failpoints))
    }

    /// Start with one vfs service per name, then `extra_config`, in a fresh temp dir.
    pub fn start_services(services: &[&str], extra_config: &str) -> Polly {
        let mut cfg = String::new();
        for s in services {
            cfg.push_str(&format!("[[services]]\nname = \"{s}\"\ndriver = \"vfs\"\n"));
        }
        cfg.push_str(extra_config);
        Self::start_config(&cfg)
    }

    /// Start with this whole TOML config in a fresh temp dir (`<tmp>/data`), removed when the
    /// server is dropped.
    pub fn start_config(config: &str) -> Polly {
        Self::start_in(tempfile::tempdir().unwrap(), config)
    }

    /// Stop (SIGKILL) and start again on the same data dir and temp dir, with another config
    /// and the same admin token.
    pub fn restart(mut self, config: &str) -> Polly {
        let (data_dir, token, dir) = (self.data_dir.clone(), self.token.take(), self.dir.take());
        self.kill9();
        let mut p = Self::launch(&data_dir, Some(config), token.as_deref(), None);
        p.dir = dir;
        p
    }

    fn start_in(dir: tempfile::TempDir, config: &str) -> Polly {
        let mut p = Self::start_with(&dir.path().join("data"), Some(config), None);
        p.dir = Some(dir);
        p
    }

    /// Start under a prefix command (`wrap`, e.g. `["heaptrack", "-o", "/tmp/polly"]`): the
    /// child is then the wrapper, and [`Polly::server_pid`] finds `polly` among its
    /// descendants. An empty `wrap` starts `polly` itself. Stop a wrapped server with
    /// [`Polly::stop_wrapped`] so that the wrapper can finish its output.
    pub fn start_wrapped(data_dir: &Path, config: Option<&str>, wrap: &[String]) -> Polly {
        Self::launch_cmd(data_dir, config, None, None, wrap)
    }

    fn launch(
        data_dir: &Path,
        config: Option<&str>,
        token: Option<&str>,
        failpoints: Option<&str>,
    ) -> Polly {
        Self::launch_cmd(data_dir, config, token, failpoints, &[])
    }

    /// Start with the admin API on `admin_listen` (an address a previous instance had, so
    /// that clients that know it by address find the restarted server).
    pub fn start_admin_on(data_dir: &Path, config: &str, admin_listen: &str) -> Polly {
        Self::launch_full(data_dir, Some(config), None, None, &[], admin_listen)
    }

    fn launch_cmd(
        data_dir: &Path,
        config: Option<&str>,
        token: Option<&str>,
        failpoints: Option<&str>,
        wrap: &[String],
    ) -> Polly {
        Self::launch_full(data_dir, config, token, failpoints, wrap, "127.0.0.1:0")
    }

    fn launch_full(
        data_dir: &Path,
        config: Option<&str>,
        token: Option<&str>,
        failpoints: Option<&str>,
        wrap: &[String],
        admin_listen: &str,
    ) -> Polly {
        let mut cmd = match wrap.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--admin-listen", admin_listen])
            .args(["--libstorage-listen", "127.0.0.1:0"])
            .args(["--offers-listen", "127.0.0.1:0"])
            .args(["--csi-listen", &csi_listen(data_dir)])
            .env_remove("POLLY_CONFIG")
            .env_remove("POLLY_ADMIN_TOKEN")
            .env("POLLY_LOG", "warn")
            .env_remove("FAILPOINTS")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(f) = failpoints {
            std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
            let log = std::fs::File::create(stderr_log(data_dir)).unwrap();
            cmd.env("FAILPOINTS", f).stderr(log);
        }
        if let Some(c) = config {
            let path = data_dir.with_extension("toml");
            std::fs::write(&path, c).unwrap();
            cmd.arg("--config").arg(path);
        }
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let mut child = cmd.spawn().expect("spawn polly");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Read stdout for the life of the process, also once nobody waits for the lines: an
        // instance prints again later (an HA instance's role changes), and a closed pipe
        // would fail that print.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut admin, mut libstorage, mut offers, mut csi, mut broker) =
            (None, None, None, None, None);
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = child.kill();
                    panic!("polly did not become ready: {e}");
                }
            };
            if let Some(a) = line.strip_prefix("polly: admin API on ") {
                admin = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("polly: libStorage on ") {
                libstorage = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("polly: storage offers on ") {
                offers = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("polly: CSI on ") {
                csi = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("polly: broker on ") {
                broker = Some(a.to_string());
            } else if line == "polly: ready" {
                break;
            }
        }
        Polly {
            child,
            admin: admin.expect("admin address printed"),
            libstorage: libstorage.expect("libstorage address printed"),
            offers: offers.expect("storage-offer address printed"),
            csi: csi.expect("CSI endpoint printed"),
            broker,
            data_dir: data_dir.to_path_buf(),
            token: token.map(String::from),
            wrapped: !wrap.is_empty(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            dir: None,
        }
    }

    /// SIGKILL: no shutdown hooks, no flush.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Wait up to `timeout` for the process to end by itself; its exit status, or `None` if
    /// it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id, to read its `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `polly` process itself: the child, or under a wrapper ([`Polly::start_wrapped`])
    /// its first descendant running [`BIN`]; `None` once it has gone.
    pub fn server_pid(&self) -> Option<u32> {
        if !self.wrapped {
            return Some(self.child.id());
        }
        let bin = Path::new(BIN).canonicalize().unwrap_or_else(|_| BIN.into());
        let is_polly =
            |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == bin);
        let mut queue = vec![self.child.id()];
        while let Some(pid) = queue.pop() {
            if is_polly(pid) {
                return Some(pid);
            }
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                queue.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        None
    }

    /// Stop a server started with [`Polly::start_wrapped`]: SIGTERM to `polly` itself, then
    /// wait up to `timeout` for the wrapper to exit (a profiler writes its output then).
    pub fn stop_wrapped(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = self.server_pid() {
            // SAFETY: kill(2) on a descendant's pid has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        self.wait_exit(timeout)
    }

    /// SIGTERM: a graceful stop.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// The exit code once the process has exited (`Some(-1)`: killed by a signal).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .unwrap()
            .map(|s| s.code().unwrap_or(-1))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Polly {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CSI endpoint a server on `data_dir` serves: a unix socket in the data dir (never the
/// default under the working directory), or any free TCP port when that path would be too
/// long for a socket.
pub fn csi_listen(data_dir: &Path) -> String {
    let sock = data_dir.join("csi.sock");
    if sock.as_os_str().len() <= 100 {
        format!("unix://{}", sock.display())
    } else {
        "tcp://127.0.0.1:0".to_string()
    }
}

/// Where a server started with [`Polly::start_failing`] writes its stderr.
pub fn stderr_log(data_dir: &Path) -> PathBuf {
    data_dir.with_extension("stderr")
}
