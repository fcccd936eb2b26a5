//! `polly instance ls`: hosts that reported themselves to Polly through the libStorage
//! façade.

use super::output::{print_json, table};
use crate::client::AdminClient;

pub(super) async fn ls(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let i = client.instances().await?;
    if json {
        return print_json(&i);
    }
    table(
        &["DRIVER", "INSTANCE", "HOSTNAME", "LAST SEEN"],
        i.iter()
            .map(|i| {
                vec![
                    i.driver.clone(),
                    i.instance_id.clone(),
                    i.hostname.clone().unwrap_or_else(|| "-".into()),
                    i.last_seen.to_string(),
                ]
            })
            .collect(),
    );
    Ok(())
}
