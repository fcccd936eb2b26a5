//! `polly orphan ls|adopt|rm`: back-end volumes Polly has no record of (and records whose
//! back-end volume is missing); adopting one, or deleting it from its back-end.

use anyhow::bail;

use super::output::{print_json, table};
use super::OrphanCmd;
use crate::client::{human_size, AdminClient};

pub(super) async fn run(client: &AdminClient, json: bool, cmd: OrphanCmd) -> anyhow::Result<()> {
    match cmd {
        OrphanCmd::Ls => ls(client, json).await,
        OrphanCmd::Adopt {
            service,
            driver_id,
            name,
        } => {
            let v = client.adopt_orphan(&service, &driver_id, name).await?;
            if json {
                return print_json(&v);
            }
            println!(
                "adopted {driver_id} of service {service} as volume {} ({})",
                v.id, v.name
            );
            Ok(())
        }
        OrphanCmd::Rm {
            service,
            driver_id,
            yes,
        } => {
            if !yes {
                bail!("orphan rm deletes back-end volume {driver_id} and its data; add --yes to confirm");
            }
            client.remove_orphan(&service, &driver_id).await?;
            if json {
                return print_json(&serde_json::json!({"deleted": driver_id, "service": service}));
            }
            println!("deleted orphan {driver_id} of service {service}");
            Ok(())
        }
    }
}

async fn ls(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let r = client.orphans().await?;
    if json {
        return print_json(&r);
    }
    table(
        &["SERVICE", "DRIVER ID", "NAME", "SIZE"],
        r.orphans
            .iter()
            .map(|o| {
                vec![
                    o.service.clone(),
                    o.driver_id.clone(),
                    o.name.clone(),
                    human_size(o.size_bytes),
                ]
            })
            .collect(),
    );
    for m in &r.missing {
        eprintln!(
            "missing: volume {} ({}/{}) has no back-end volume {}",
            m.volume_id, m.service, m.name, m.driver_id
        );
    }
    for (s, e) in &r.unreachable {
        eprintln!("unreachable: service {s}: {e}");
    }
    Ok(())
}
