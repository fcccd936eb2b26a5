//! `polly version`: this client's version and the server's, or why the server is unreachable.

use super::output::print_json;
use crate::client::AdminClient;

pub(super) async fn run(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let server = client.version().await;
    if json {
        return print_json(&serde_json::json!({
            "client": env!("CARGO_PKG_VERSION"),
            "server": server.as_ref().ok(),
            "server_error": server.as_ref().err().map(|e| e.to_string()),
        }));
    }
    println!("client: polly {}", env!("CARGO_PKG_VERSION"));
    match server {
        Ok(v) => println!(
            "server: {} {} (store schema {})",
            v.name, v.version, v.schema_version
        ),
        Err(e) => println!("server: unreachable ({e})"),
    }
    Ok(())
}
