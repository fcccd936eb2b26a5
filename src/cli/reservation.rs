//! `polly reservation ls|release`: volumes reserved by Mesos frameworks, and releasing
//! what a framework that went away still holds.

use super::output::{print_json, table};
use super::ReservationCmd;
use crate::client::{human_size, AdminClient};

pub(super) async fn run(
    client: &AdminClient,
    json: bool,
    cmd: ReservationCmd,
) -> anyhow::Result<()> {
    match cmd {
        ReservationCmd::Ls => ls(client, json).await,
        ReservationCmd::Release {
            framework_id,
            volume,
            force,
        } => release(client, json, &framework_id, volume.as_deref(), force).await,
    }
}

async fn ls(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let r = client.reservations().await?;
    if json {
        return print_json(&r);
    }
    let rows = r
        .iter()
        .map(|r| {
            vec![
                r.framework_id.clone(),
                r.role.clone(),
                r.principal.clone().unwrap_or_else(|| "-".into()),
                r.volume_id.clone(),
                human_size(r.bytes),
            ]
        })
        .collect();
    table(&["FRAMEWORK", "ROLE", "PRINCIPAL", "VOLUME", "SIZE"], rows);
    Ok(())
}

async fn release(
    client: &AdminClient,
    json: bool,
    framework_id: &str,
    volume: Option<&str>,
    force: bool,
) -> anyhow::Result<()> {
    let r = client
        .release_reservations(framework_id, volume, force)
        .await?;
    if json {
        return print_json(&r);
    }
    for v in &r.released {
        println!("released {v} (the volume still exists)");
    }
    println!(
        "framework {} holds {} more reservation(s)",
        r.framework_id, r.remaining
    );
    Ok(())
}
