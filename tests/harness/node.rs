//! The `polly node` process under test: the node agent with its plugin socket, mount root
//! and state dir where the test says, its health endpoint on 127.0.0.1:0 (address learnt
//! from stdout), killable with SIGKILL and restartable with the same arguments; and a
//! plain HTTP client for the plugin socket, so tests can speak the plugin protocol as
//! Docker does, malformed bodies included.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::polly::BIN;

/// Where one node keeps its things.
#[derive(Debug, Clone)]
pub struct NodeDirs {
    pub instance_id: String,
    pub socket: PathBuf,
    pub mount_root: PathBuf,
    pub state_dir: PathBuf,
}

impl NodeDirs {
    /// Mount root and state dir under `dir`, the socket at `socket`.
    pub fn new(dir: &Path, instance_id: &str, socket: &Path) -> NodeDirs {
        NodeDirs {
            instance_id: instance_id.to_string(),
            socket: socket.to_path_buf(),
            mount_root: dir.join(format!("{instance_id}-mounts")),
            state_dir: dir.join(format!("{instance_id}-state")),
        }
    }
}

pub struct Node {
    child: Option<Child>,
    pub dirs: NodeDirs,
    pub server: String,
    pub health: String,
    extra: Vec<String>,
}

impl Node {
    /// Start `polly node` against central's admin API `server`.
    pub fn start(server: &str, dirs: &NodeDirs, extra: &[&str]) -> Node {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, health) = Self::spawn(server, dirs, &extra);
        Node {
            child: Some(child),
            dirs: dirs.clone(),
            server: server.to_string(),
            health,
            extra,
        }
    }

    fn spawn(server: &str, dirs: &NodeDirs, extra: &[String]) -> (Child, String) {
        let mut child = Command::new(BIN)
            .arg("node")
            .args(["--server", server])
            .args(["--instance-id", &dirs.instance_id])
            .arg("--socket")
            .arg(&dirs.socket)
            .arg("--mount-root")
            .arg(&dirs.mount_root)
            .arg("--state-dir")
            .arg(&dirs.state_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("POLLY_CONFIG")
            .env_remove("POLLY_ADMIN_TOKEN")
            .env("POLLY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn polly node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut health = None;
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = child.kill();
                    panic!("polly node did not become ready: {e}");
                }
            };
            if let Some(a) = line.strip_prefix("polly node: health on ") {
                health = Some(a.to_string());
            } else if line == "polly node: ready" {
                break;
            }
        }
        (child, health.expect("health address printed"))
    }

    /// SIGKILL, then start again with the same arguments.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        let (child, health) = Self::spawn(&self.server, &self.dirs, &self.extra);
        self.child = Some(child);
        self.health = health;
    }

    /// SIGKILL: no shutdown, nothing cleaned up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One plugin call on the socket: status and JSON body.
    pub fn call(&self, call: &str, body: &str) -> (u16, serde_json::Value) {
        plugin_call(&self.dirs.socket, call, body)
    }

    /// `GET` on the health endpoint: the body as text.
    pub fn health_get(&self, path: &str) -> String {
        let url = format!("{}{path}", self.health);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { reqwest::get(&url).await.unwrap().text().await.unwrap() })
    }
}

impl Drop for Node {
    /// Kill the agent and remove its socket: a socket nobody serves under
    /// /run/docker/plugins costs every Docker daemon on the host retries when it lists.
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.dirs.socket);
    }
}

/// POST `/<call>` with `body` on a plugin socket, as Docker's plugin client does (HTTP/1.1,
/// the plugin content type): the status and the JSON body (`Null` when it is not JSON).
pub fn plugin_call(socket: &Path, call: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    let req = format!(
        "POST /{call} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response from the plugin: {text:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/vnd.docker.plugins.v1.2+json"),
        "plugin response without the plugin content type: {head}"
    );
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// True when this process can mount (root); otherwise says loudly that `what` did not run,
/// and fails under CI, which must run it.
pub fn can_mount(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} needs root (mounts) and CI must run it"
    );
    eprintln!("*** skipped: {what} did NOT run: it needs root to mount volumes ***");
    false
}

/// Mount points at or under `root`, from /proc/self/mountinfo.
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(root))
        .collect()
}
