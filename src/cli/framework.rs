//! `polly framework ls`: frameworks subscribed to the storage-offer endpoint, and whether
//! what they hold may be released yet.

use super::output::{print_json, table};
use crate::client::AdminClient;

pub(super) async fn ls(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let f = client.frameworks().await?;
    if json {
        return print_json(&f);
    }
    let rows = f
        .iter()
        .map(|f| {
            let state = if f.connected {
                "connected"
            } else if f.releasable {
                "torn down, releasable"
            } else if f.torn_down_at.is_some() {
                "torn down"
            } else {
                "disconnected"
            };
            vec![
                f.id.clone(),
                f.name.clone(),
                f.role.clone(),
                state.into(),
                f.offers.to_string(),
                f.reservations.to_string(),
                f.grace_ends.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "ROLE",
            "STATE",
            "OFFERS",
            "RESERVATIONS",
            "GRACE ENDS",
        ],
        rows,
    );
    Ok(())
}
