//! `polly operation ls`: operations in flight, one row per recorded intent.

use super::output::{print_json, table};
use crate::client::AdminClient;

pub(super) async fn ls(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let ops = client.operations().await?;
    if json {
        return print_json(&ops);
    }
    table(
        &["ID", "VOLUME", "SERVICE", "OPERATION", "STARTED"],
        ops.iter()
            .map(|i| {
                // The operation's name is the tag of its JSON form (`{"op": "create", ...}`).
                let op = serde_json::to_value(&i.op)
                    .ok()
                    .and_then(|v| v.get("op").and_then(|o| o.as_str().map(String::from)))
                    .unwrap_or_default();
                vec![
                    i.id.to_string(),
                    i.volume_id.clone(),
                    i.service.clone(),
                    op,
                    i.created_at.to_string(),
                ]
            })
            .collect(),
    );
    Ok(())
}
