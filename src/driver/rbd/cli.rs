//! Running the `rbd` and `ceph` command-line tools (with the configured ceph.conf and client
//! id) and reading their output: JSON, exit codes and stderr, sizes and timestamps.

use super::{Error, RbdDriver, Result};

/// A failed CLI call: its exit code and stderr.
pub(super) struct CliError {
    code: Option<i32>,
    msg: String,
}

impl CliError {
    pub(super) fn not_found(&self) -> bool {
        self.code == Some(2) || self.msg.contains("(2) No such file or directory")
    }
    pub(super) fn busy(&self) -> bool {
        self.code == Some(16) || self.msg.contains("already held")
    }
}

impl From<CliError> for Error {
    fn from(e: CliError) -> Self {
        Error::Io(e.msg)
    }
}

impl RbdDriver {
    pub(super) async fn cli(
        &self,
        program: &str,
        args: &[&str],
    ) -> std::result::Result<String, CliError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg("-c").arg(&self.cfg.conf);
        if let Some(id) = &self.cfg.client_id {
            cmd.arg("--id").arg(id);
        }
        cmd.args(args).kill_on_drop(true);
        let out = cmd.output().await.map_err(|e| CliError {
            code: None,
            msg: format!("run {program}: {e}"),
        })?;
        if !out.status.success() {
            return Err(CliError {
                code: out.status.code(),
                msg: format!(
                    "{program} {} failed ({}): {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(super) async fn rbd(&self, args: &[&str]) -> std::result::Result<String, CliError> {
        self.cli("rbd", args).await
    }

    pub(super) async fn rbd_json<T: serde::de::DeserializeOwned>(
        &self,
        args: &[&str],
    ) -> Result<T> {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.rbd(&all).await?;
        let out = if out.trim().is_empty() { "{}" } else { &out };
        serde_json::from_str(out)
            .map_err(|e| Error::Io(format!("rbd {}: unexpected output: {e}", args.join(" "))))
    }
}

/// An `rbd --size` argument in bytes.
pub(super) fn bytes(n: u64) -> String {
    format!("{n}B")
}

/// Unix seconds of a ctime(3)-style UTC timestamp such as `Thu Nov 26 02:06:17 2026`.
pub(super) fn parse_ctime(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, mon, day, time, year] = parts.as_slice() else {
        return None;
    };
    let m = MONTHS.iter().position(|x| x == mon)? as i64 + 1;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    let [h, min, sec] = hms.as_slice() else {
        return None;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + min * 60 + sec).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_timestamps_parse_as_utc() {
        assert_eq!(parse_ctime("Thu Jan  1 00:00:00 1970"), Some(0));
        assert_eq!(parse_ctime("Thu Nov 26 02:06:17 2026"), Some(1_795_658_777));
        assert_eq!(parse_ctime("garbage"), None);
    }
}
