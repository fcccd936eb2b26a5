//! `polly agent ls|fence`: Mesos agents and REX-Ray hosts with their lost/fenced state, and
//! fencing a node that is powered off.

use anyhow::bail;

use super::output::{dash, print_json, table};
use super::AgentCmd;
use crate::client::AdminClient;
use crate::store::NodeState;

pub(super) async fn run(client: &AdminClient, json: bool, cmd: AgentCmd) -> anyhow::Result<()> {
    match cmd {
        AgentCmd::Ls => ls(client, json).await,
        AgentCmd::Fence { id, yes } => fence(client, json, &id, yes).await,
    }
}

async fn fence(client: &AdminClient, json: bool, id: &str, yes: bool) -> anyhow::Result<()> {
    if !yes {
        bail!("agent fence force-detaches every volume attached to {id}; it is safe only if {id} is powered off. Add --yes to confirm");
    }
    let r = client.fence(id).await?;
    if json {
        return print_json(&r);
    }
    println!(
        "fenced {} ({}): released {} volume(s){}",
        r.id,
        r.hostname.as_deref().unwrap_or("-"),
        r.released.len(),
        if r.released.is_empty() {
            String::new()
        } else {
            format!(": {}", r.released.join(", "))
        }
    );
    Ok(())
}

async fn ls(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let agents = client.agents().await?;
    if json {
        return print_json(&agents);
    }
    table(
        &[
            "ID",
            "HOSTNAME",
            "REGION",
            "ZONE",
            "STATE",
            "SOURCE",
            "ATTRIBUTES",
        ],
        agents
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.hostname.clone(),
                    dash(&a.region),
                    dash(&a.zone),
                    match (a.fence, a.lost) {
                        (Some(NodeState::Fenced), _) => "fenced",
                        (Some(NodeState::Fencing), _) => "fencing",
                        (Some(NodeState::Lost), _) | (None, true) => "lost",
                        (None, false) => "active",
                    }
                    .to_string(),
                    format!("{:?}", a.source).to_lowercase(),
                    a.attributes
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect::<Vec<_>>()
                        .join(";"),
                ]
            })
            .collect(),
    );
    Ok(())
}
