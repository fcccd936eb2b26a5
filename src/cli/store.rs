//! `polly store dump|backup|erase`: every record of the store, as JSON on stdout or in a
//! file, and erasing them all.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

use super::output::print_json;
use super::StoreCmd;
use crate::client::AdminClient;

pub(super) async fn run(client: &AdminClient, json: bool, cmd: StoreCmd) -> anyhow::Result<()> {
    match cmd {
        StoreCmd::Dump => print_json(&client.dump().await?),
        StoreCmd::Backup { file } => backup(client, json, &file).await,
        StoreCmd::Erase { yes } => {
            if !yes {
                bail!("erase removes every record from the store; add --yes to confirm");
            }
            client.erase().await?;
            if json {
                return print_json(&serde_json::json!({"erased": true}));
            }
            println!("store erased");
            Ok(())
        }
    }
}

/// Write the dump to a temporary file beside `file`, then rename it: a failed backup
/// never leaves a truncated file under the name asked for.
async fn backup(client: &AdminClient, json: bool, file: &Path) -> anyhow::Result<()> {
    let dump = client.dump().await?;
    let tmp = file.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        serde_json::to_writer_pretty(&mut f, &dump)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
    if json {
        return print_json(&serde_json::json!({
            "file": file, "volumes": dump.volumes.len(),
        }));
    }
    println!(
        "backed up {} volumes, {} instances, {} intents to {}",
        dump.volumes.len(),
        dump.instances.len(),
        dump.intents.len(),
        file.display()
    );
    Ok(())
}
