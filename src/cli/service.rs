//! `polly service ls`: storage services, one row per pool with its capacity, and what the
//! capacity poller last saw.

use super::output::{print_json, table};
use crate::client::{human_size, AdminClient};
use crate::volumes::ServiceInfo;

pub(super) async fn ls(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let s = client.services().await?;
    if json {
        return print_json(&s);
    }
    let mut rows = Vec::new();
    for svc in &s {
        if let Some(e) = &svc.capacity_error {
            rows.push(vec![
                svc.name.clone(),
                svc.driver.clone(),
                "-".into(),
                "-".into(),
                format!("unavailable: {e}"),
                "".into(),
                svc.volumes.to_string(),
                human_size(svc.provisioned_bytes),
                poll_state(svc),
            ]);
        }
        for c in &svc.capacity {
            rows.push(vec![
                svc.name.clone(),
                svc.driver.clone(),
                c.pool.clone(),
                c.zone.clone().unwrap_or_else(|| "-".into()),
                human_size(c.total_bytes),
                human_size(c.free_bytes),
                svc.volumes.to_string(),
                human_size(svc.provisioned_bytes),
                poll_state(svc),
            ]);
        }
    }
    table(
        &[
            "SERVICE",
            "DRIVER",
            "POOL",
            "ZONE",
            "TOTAL",
            "FREE",
            "VOLUMES",
            "PROVISIONED",
            "POLLED",
        ],
        rows,
    );
    Ok(())
}

/// The capacity poller's view of a service, for `polly service ls`.
fn poll_state(s: &ServiceInfo) -> String {
    match (&s.polled_at, s.available) {
        (Some(t), true) => t.clone(),
        (_, false) => match &s.poll_error {
            Some(e) => format!("unavailable: {e}"),
            None => "not yet".into(),
        },
        (None, true) => "-".into(),
    }
}
