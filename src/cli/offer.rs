//! `polly offer ls`: storage offers outstanding at the storage-offer endpoint.

use super::output::{print_json, table};
use crate::client::AdminClient;

pub(super) async fn ls(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let o = client.offers().await?;
    if json {
        return print_json(&o);
    }
    let rows = o
        .iter()
        .map(|o| {
            vec![
                o.id.clone(),
                o.framework_id.clone(),
                o.agent_id.clone(),
                o.disks.len().to_string(),
                o.expires.clone(),
            ]
        })
        .collect();
    table(&["ID", "FRAMEWORK", "AGENT", "DISKS", "EXPIRES"], rows);
    Ok(())
}
