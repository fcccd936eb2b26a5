//! The I/O half of `polly marathon`: read a snapshot of Polly through the admin API, and
//! carry out the actions of a clean [`Report`](super::Report). Creates go through the admin
//! API's create, which is idempotent by (service, name), so a repeated or concurrent
//! provision creates each volume once.

use serde::{Deserialize, Serialize};

use super::{Action, Cluster, CLAIM_LABEL};
use crate::admin::VolumeView;
use crate::client::{AdminClient, Result};

/// What Polly looks like now: services with live capacity, and every volume.
pub async fn snapshot(client: &AdminClient) -> Result<Cluster> {
    let services = client.services().await?;
    let volumes = client.volumes(false).await?.volumes;
    Ok(Cluster { services, volumes })
}

/// What `provision` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProvisionOutcome {
    /// Volumes created now.
    pub created: Vec<VolumeView>,
    /// Existing volumes labelled with their claim now.
    pub claimed: Vec<VolumeView>,
    /// Actions that lost a race (someone else created or claimed the volume meanwhile).
    pub conflicts: Vec<String>,
}

/// Carry out `actions` in order. A create that finds the volume already there (another
/// provision won the race) is not counted as created; one claimed by another app is a
/// conflict.
pub async fn provision(client: &AdminClient, actions: &[Action]) -> Result<ProvisionOutcome> {
    let mut out = ProvisionOutcome::default();
    for a in actions {
        match a {
            Action::Create { app, volume } => {
                let before = client
                    .inspect(&volume.name, Some(&volume.service))
                    .await
                    .ok();
                let v = client.create(volume).await?;
                let owner = v.labels.get(CLAIM_LABEL);
                if owner.is_some_and(|o| o != app) {
                    out.conflicts.push(format!(
                        "volume {}/{} was created meanwhile for {}",
                        v.service,
                        v.name,
                        owner.map(String::as_str).unwrap_or("another app")
                    ));
                } else if before.is_none() {
                    out.created.push(v);
                }
            }
            Action::Claim {
                app,
                volume_id,
                service,
                name,
            } => {
                let v = client.inspect(volume_id, None).await?;
                match v.labels.get(CLAIM_LABEL) {
                    Some(o) if o == app => {}
                    Some(o) => out.conflicts.push(format!(
                        "volume {service}/{name} was claimed meanwhile by {o}"
                    )),
                    None => {
                        let labels = [(CLAIM_LABEL.to_string(), app.clone())].into();
                        out.claimed
                            .push(client.label(volume_id, None, labels).await?);
                    }
                }
            }
        }
    }
    Ok(out)
}
