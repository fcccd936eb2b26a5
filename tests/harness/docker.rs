//! A real Docker daemon for the Docker volume plugin tests ([`Dockerd`]): Debian's `dockerd`
//! with everything in a temp dir of its own under /tmp (data root, exec root, pid file, the
//! API socket `unix://<dir>/docker.sock`, `dockerd.log`), `--iptables=false --bridge=none
//! --ip-forward=false` so it leaves the host's network alone, on overlay2 (vfs when overlay2
//! does not come up), and a busybox image imported from the host's static busybox, so no
//! registry is needed.
//!
//! Each `Dockerd` starts its own containerd under its exec root (socket, state and shim
//! addresses all derive from it), so two daemons run side by side without sharing anything
//! but the host's `/run/containerd/s/` (shim sockets named by a hash of that address). When
//! the handle drops, its containers are removed, the daemon is stopped (SIGTERM, then
//! SIGKILL), leftover shims and container processes are killed, and everything still
//! mounted under the temp dir (overlay layers, network namespaces) is unmounted before the
//! dir is removed; a panicking test leaves nothing behind. A watcher process does the same
//! (less thoroughly) when the test process dies without unwinding.
//!
//! Plugin discovery: Docker finds a legacy volume plugin only by name, as the socket
//! `/run/docker/plugins/<name>.sock` (or a spec file under `/etc/docker/plugins`), a fixed
//! directory shared by every daemon on the host. So each test serves its plugin under a name
//! of its own, [`plugin_name`] (`polly-t<pid>-<n>`), at [`plugin_socket`]: parallel tests,
//! and a real `polly` plugin the user runs, never see each other's. Declare the plugin
//! before the `Dockerd` in a test, so the daemon (whose container removal calls the plugin)
//! drops first.
//!
//! A unique name keeps the calls apart, not the listings: every daemon activates every
//! socket in that directory when it lists volumes (`docker volume ls`, or a look-up of a
//! volume it does not know, such as inspecting a removed one). So filter listings by name,
//! and remove the socket when the test ends, also after killing its plugin: a socket nobody
//! serves costs each such call on the host 15 s of retries. [`plugin_socket`] removes the
//! sockets of test processes that are gone.
//!
//! [`Dockerd::start`] returns `None` after a loud `*** skipped: … ***` line when this host
//! cannot run it (not root, no `dockerd`, no static busybox: `apt-get install docker.io
//! busybox-static`); under `CI` it panics instead, so CI never skips.

use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The image [`Dockerd::image`] imports: `/bin/busybox` and its applet links.
pub const IMAGE: &str = "polly-busybox:test";

/// Where Docker looks for legacy plugin sockets (not configurable, not per daemon).
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

const BUSYBOX: &str = "/bin/busybox";
const INSTALL_HINT: &str = "apt-get install docker.io busybox-static";
/// How long `docker version` may take to answer after dockerd starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one client command may run before the test fails instead of hanging.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long dockerd gets to stop on SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Daemons start one at a time: a fresh host's first start writes `/etc/docker/key.json`,
/// which two concurrent first starts could race on (and two cores gain nothing anyway).
static START_LOCK: Mutex<()> = Mutex::new(());

/// A unique legacy plugin name for one test: `polly-t<pid>-<n>`.
pub fn plugin_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "polly-t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `/run/docker/plugins/<name>.sock`, where Docker discovers the plugin `name`. Creates the
/// directory, removes a socket an earlier process with the same pid left at this path, and
/// the `polly-t<pid>-<n>.sock` sockets of test processes that are gone (see the module
/// comment for what a stale socket costs).
pub fn plugin_socket(name: &str) -> PathBuf {
    std::fs::create_dir_all(PLUGIN_DIR).unwrap_or_else(|e| panic!("create {PLUGIN_DIR}: {e}"));
    for entry in std::fs::read_dir(PLUGIN_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        let file = entry.file_name().to_string_lossy().into_owned();
        let pid = file
            .strip_prefix("polly-t")
            .and_then(|rest| rest.split_once('-'))
            .filter(|(_, n)| n.ends_with(".sock"))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let path = Path::new(PLUGIN_DIR).join(format!("{name}.sock"));
    let _ = std::fs::remove_file(&path);
    path
}

/// A `dockerd` of the test's own; see the module comment.
pub struct Dockerd {
    /// The temp dir (canonical, as /proc/self/mountinfo shows it).
    dir: PathBuf,
    dockerd: PathBuf,
    client: PathBuf,
    child: Option<Child>,
    watcher: Option<Child>,
    driver: &'static str,
    image: OnceLock<()>,
}

impl Dockerd {
    /// A new daemon, answering on its socket; `None` (said loudly) where this host cannot
    /// run one, a panic instead under `CI`. Panics if the daemon does not come up.
    pub fn start() -> Option<Dockerd> {
        let (dockerd, client) = match tools() {
            Ok(tools) => tools,
            Err(why) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must run the Docker tests: {why} (run as root, {INSTALL_HINT}; .ci/run does)"
                );
                eprintln!(
                    "\n*** skipped: the Docker tests did NOT run: {why}; they need root and dockerd ({INSTALL_HINT}) ***\n"
                );
                return None;
            }
        };
        let _one_at_a_time = START_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // Under /tmp, not $TMPDIR: unix socket paths (containerd's among them) must stay
        // under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("polly-dockerd-")
            .tempdir_in("/tmp")
            .expect("create a temp dir under /tmp")
            .keep();
        let dir = dir.canonicalize().unwrap_or(dir);
        // From here on a panic unwinds through Drop, which cleans up.
        let mut d = Dockerd {
            dir,
            dockerd,
            client,
            child: None,
            watcher: None,
            driver: "overlay2",
            image: OnceLock::new(),
        };
        // An empty config file: /etc/docker/daemon.json, if the host has one, is not ours.
        std::fs::write(d.dir.join("daemon.json"), "{}\n").expect("write daemon.json");
        let mut failures = Vec::new();
        for driver in ["overlay2", "vfs"] {
            match d.spawn(driver) {
                Ok(()) => {
                    if !failures.is_empty() {
                        eprintln!("dockerd harness: {failures:?}; running on {driver}");
                    }
                    return Some(d);
                }
                Err(e) => {
                    eprintln!(
                        "dockerd harness: dockerd --storage-driver {driver} did not come up: {e}\n{}",
                        d.log_tail()
                    );
                    failures.push(format!("{driver}: {e}"));
                    d.stop_daemon();
                    d.kill_leftovers();
                    d.unmount_all();
                    for sub in ["data", "exec"] {
                        let _ = std::fs::remove_dir_all(d.dir.join(sub));
                    }
                }
            }
        }
        panic!(
            "dockerd did not come up with overlay2 nor with vfs: {failures:?}; log: {}",
            d.log().display()
        );
    }

    /// `unix://<dir>/docker.sock`, for `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// The daemon's temp dir (removed when the handle drops).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `overlay2`, or `vfs` where overlay2 did not come up.
    pub fn storage_driver(&self) -> &str {
        self.driver
    }

    /// The daemon's log (stdout and stderr of every start).
    pub fn log(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The last 40 lines of the daemon's log, headed by its path.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(self.log())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- tail of {} ---\n{tail}", self.log().display())
    }

    /// The `docker` client against this daemon (its own config dir, not the user's), run
    /// to completion. Panics if it cannot start or runs longer than two minutes.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_within(args, COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("docker {}: {e}\n{}", args.join(" "), self.log_tail()))
    }

    /// `docker args…`, which must succeed; its stdout. On failure the panic shows stdout,
    /// stderr and the daemon's log tail.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "docker {} failed ({}):\nstdout: {stdout}\nstderr: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        stdout
    }

    /// `docker args…`, which must fail; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {} succeeded but should have failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// [`IMAGE`], imported into this daemon on first use: `/bin/busybox` and the links
    /// `busybox --install -s /bin` makes, plus `/tmp`.
    pub fn image(&self) -> &str {
        self.image.get_or_init(|| {
            let rootfs = self.dir.join("rootfs");
            let bin = rootfs.join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
                .unwrap();
            std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
            // What `busybox --install -s /bin` would make inside the image. Running it on the
            // host would link to the host's path of the binary (/usr/bin/busybox on a
            // merged-/usr system), which the image does not have.
            let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
            assert!(list.status.success(), "{BUSYBOX} --list: {list:?}");
            for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
                if applet != "busybox" {
                    std::os::unix::fs::symlink("/bin/busybox", bin.join(applet)).unwrap();
                }
            }
            let tar = self.dir.join("rootfs.tar");
            let status = Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .status()
                .expect("run tar");
            assert!(status.success(), "tar of {}: {status}", rootfs.display());
            self.ok(&["import", &tar.to_string_lossy(), IMAGE]);
        });
        IMAGE
    }

    /// `docker run --rm --network none -v <volume> IMAGE sh -c <script>`, which must
    /// succeed; its stdout. `volume` is a `-v` spec, `name:/path[:opts]`.
    pub fn run_sh(&self, volume: &str, script: &str) -> String {
        let image = self.image();
        self.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            volume,
            image,
            "sh",
            "-c",
            script,
        ])
    }

    fn docker_within(&self, args: &[&str], limit: Duration) -> Result<Output, String> {
        let mut cmd = Command::new(&self.client);
        cmd.env("DOCKER_CONFIG", self.dir.join("client"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .arg("-H")
            .arg(self.host())
            .args(args);
        run_bounded(cmd, limit)
    }

    /// Start dockerd on `driver` and wait until it answers; on error the caller cleans up.
    fn spawn(&mut self, driver: &'static str) -> Result<(), String> {
        self.driver = driver;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(|e| format!("open {}: {e}", self.log().display()))?;
        let _ = writeln!(log, "=== polly test harness: --storage-driver {driver} ===");
        let d = &self.dir;
        let child = Command::new(&self.dockerd)
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(self.host())
            .args(["--iptables=false", "--ip-forward=false", "--bridge=none"])
            .args(["--storage-driver", driver])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            // Its own process group: a Ctrl-C of the test run kills the test process only,
            // and the watcher then stops the daemon and cleans up in order.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.dockerd.display()))?;
        let pid = child.id();
        self.child = Some(child);
        self.start_watcher(pid);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("dockerd exited: {status}"));
            }
            let answer = self.docker_within(&["version"], Duration::from_secs(10));
            if answer.is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer to `docker version` in {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A process that stops the daemon, unmounts and removes the temp dir if the test
    /// process dies without running Drop (SIGKILL, abort); Drop kills it first.
    fn start_watcher(&mut self, daemon: u32) {
        self.stop_watcher();
        let script = r#"
            while kill -0 "$0" 2>/dev/null; do sleep 1; done
            kill -TERM "$1" 2>/dev/null
            i=0
            while kill -0 "$1" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 1; i=$((i + 1)); done
            kill -KILL "$1" 2>/dev/null
            awk -v d="$2" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
                sort -r | while read -r m; do umount -l "$m"; done
            rm -rf "$2"
        "#;
        self.watcher = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(std::process::id().to_string())
            .arg(daemon.to_string())
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok();
    }

    fn stop_watcher(&mut self) {
        if let Some(mut w) = self.watcher.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `docker rm -f -v` every container, so shutdown needs no stop timeouts.
    fn remove_containers(&self) {
        let Ok(ps) = self.docker_within(&["ps", "-aq"], Duration::from_secs(30)) else {
            return;
        };
        let ids = String::from_utf8_lossy(&ps.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            if let Err(e) = self.docker_within(&args, Duration::from_secs(60)) {
                eprintln!("dockerd harness: removing containers: {e}");
            }
        }
    }

    /// SIGTERM, wait at most [`STOP_TIMEOUT`], then SIGKILL.
    fn stop_daemon(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!(
                    "dockerd harness: dockerd did not stop on SIGTERM in {STOP_TIMEOUT:?}; SIGKILL\n{}",
                    self.log_tail()
                );
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// After a daemon that did not stop cleanly: SIGKILL its containerd and shims (their
    /// command lines name the exec root) and its containers' processes (their cgroups name
    /// a container id), then remove the shim sockets and cgroups they leave.
    fn kill_leftovers(&self) {
        let exec = format!("{}/exec/", self.dir.display());
        let ids: Vec<String> = std::fs::read_dir(self.dir.join("data/containers"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let me = std::process::id();
        let mut killed = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            let ours = cmdline.windows(exec.len()).any(|w| w == exec.as_bytes())
                || ids.iter().any(|id| cgroup.contains(id.as_str()));
            if ours {
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                killed.push(pid);
            }
        }
        if killed.is_empty() {
            return;
        }
        eprintln!("dockerd harness: killed leftover processes {killed:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while killed
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let cgroup_roots: Vec<PathBuf> = mounts()
            .into_iter()
            .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
            .map(|(path, _)| path)
            .collect();
        for id in &ids {
            // containerd-shim-runc-v2 names its socket by the sha256 of this path.
            let key = format!("{exec}containerd/containerd.sock/moby/{id}");
            if let Some(hash) = sha256_hex(&key) {
                let _ = std::fs::remove_file(format!("/run/containerd/s/{hash}"));
            }
            for root in &cgroup_roots {
                let _ = std::fs::remove_dir(root.join("docker").join(id));
                let _ = std::fs::remove_dir(root.join(format!("system.slice/docker-{id}.scope")));
            }
        }
    }

    /// Unmount everything mounted at or under the temp dir, deepest first (lazily if busy).
    fn unmount_all(&self) {
        for _ in 0..5 {
            let mut ours: Vec<PathBuf> = mounts()
                .into_iter()
                .map(|(path, _)| path)
                .filter(|p| p.starts_with(&self.dir))
                .collect();
            if ours.is_empty() {
                return;
            }
            ours.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for path in ours {
                let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
                    continue;
                };
                if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
        eprintln!(
            "dockerd harness: mounts left under {} after 5 rounds of umount",
            self.dir.display()
        );
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop_watcher();
        if self.running() {
            self.remove_containers();
        }
        self.stop_daemon();
        self.kill_leftovers();
        self.unmount_all();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("dockerd harness: remove {}: {e}", self.dir.display());
        }
    }
}

/// `dockerd` and the client that came with it, or why this host cannot run the tests.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dockerd = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join("dockerd"))
        .find(|p| p.is_file())
        .ok_or("no dockerd")?;
    // The client next to dockerd (or in the sibling bin/: Debian has /usr/sbin/dockerd and
    // /usr/bin/docker), not whichever `docker` is first on PATH: another client may speak
    // another API version or read another context.
    let dir = dockerd.parent().unwrap_or(Path::new("/"));
    let client = [
        dir.join("docker"),
        dir.join("../bin/docker"),
        "/usr/bin/docker".into(),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| format!("no docker client next to {}", dockerd.display()))?;
    if !Path::new(BUSYBOX).is_file() {
        return Err(format!("no {BUSYBOX}"));
    }
    if !is_static_elf(Path::new(BUSYBOX)) {
        return Err(format!(
            "{BUSYBOX} is not statically linked (busybox-static, not busybox)"
        ));
    }
    Ok((dockerd, client))
}

/// False for an ELF file with a program interpreter (a dynamic executable); true for a
/// static one, and for anything not a little-endian ELF (let the container say).
fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[5] != 1 {
        return true;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = match b[4] {
        1 => (u32_at(0x1c), u16_at(0x2a), u16_at(0x2c)),
        2 => (
            u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize,
            u16_at(0x36),
            u16_at(0x38),
        ),
        _ => return true,
    };
    const PT_INTERP: usize = 3;
    !(0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32_at(o) == PT_INTERP
    })
}

/// Every mount of this process's namespace: (mount point, file system type).
fn mounts() -> Vec<(PathBuf, String)> {
    let info = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    info.split(|&c| c == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
            let point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == b"-")?;
            let fstype = String::from_utf8_lossy(fields.get(dash + 1)?).into_owned();
            Some((PathBuf::from(OsStr::from_bytes(&unescape(point))), fstype))
        })
        .collect()
}

/// mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let code = s
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok());
        if let (b'\\', Some(Ok(v))) = (s[i], code.map(|d| u8::from_str_radix(d, 8))) {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn sha256_hex(s: &str) -> Option<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(s.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.split_whitespace().next()?.to_string())
}

/// Run `cmd` to completion with its output captured; SIGKILL it after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.map_err(|e| e.to_string()),
        Err(_) => {
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv();
            Err(format!("did not finish within {limit:?}"))
        }
    }
}
