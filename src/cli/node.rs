//! `polly node`: the node agent (Docker volume plugin), configured from `[node]` in a
//! config file and flags; runs until SIGINT or SIGTERM.

use super::NodeArgs;
use crate::node::{NodeSection, PathMap};

/// Run the node agent; `admin_url` is the global `--admin-url` (central's admin API when
/// neither `--server` nor `[node] server` names it), `token` the global `--token`.
pub(super) async fn run(
    a: NodeArgs,
    admin_url: String,
    token: Option<String>,
) -> anyhow::Result<()> {
    let shutdown = super::shutdown_signal();
    let file = match &a.config {
        Some(path) => NodeSection::load(path)?,
        None => NodeSection::default(),
    };
    let mut path_map = Vec::new();
    for m in &a.path_map {
        let Some((central, local)) = m.split_once('=') else {
            anyhow::bail!("--path-map {m:?}: write CENTRAL_PATH=LOCAL_PATH");
        };
        path_map.push(PathMap {
            central: central.into(),
            local: local.into(),
        });
    }
    let flags = NodeSection {
        server: a.server,
        token,
        instance_id: a.instance_id,
        zone: a.zone,
        socket: a.socket,
        listen: a.listen,
        mount_root: a.mount_root,
        state_dir: a.state_dir,
        service: a.service,
        default_size: a.default_size,
        path_map,
        report_interval_secs: a.report_interval_secs,
        central_timeout_secs: a.central_timeout_secs,
        csi_endpoint: a.csi_endpoint,
        csi_server: a.csi_server,
        csi_max_volumes: None,
    };
    let mut section = file.overlay(flags);
    if section.server.is_none() {
        section.server = Some(admin_url);
    }
    let cfg = section.resolve()?;
    crate::node::run(cfg, shutdown).await?;
    Ok(())
}
