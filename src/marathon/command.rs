//! `polly marathon check|provision <file|->`: read a definition, take a snapshot of Polly,
//! check, and (provision) carry out the plan. Exit codes for deploy pipelines: 0 deployable
//! (or provisioned), 1 problems found (nothing provisioned), 2 usage error (unreadable or
//! invalid definition) or Polly unreachable / refusing the admin call.

use std::io::Read;

use clap::{Args, Subcommand};

use super::{check, parse, provision, render, snapshot, Options};
use crate::cli::Exit;
use crate::client::AdminClient;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a Marathon app or group definition against Polly (exit 0 ok, 1 problems, 2
    /// usage error or Polly unreachable).
    Check(CheckArgs),
    /// Create the volumes a definition needs (restricted to their service, labelled
    /// marathon.app=<app id>) and claim existing ones; running it again changes nothing.
    Provision(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// App or group definition (JSON), or `-` for stdin.
    pub file: String,
    /// Polly service of external volumes without a `dvdi/polly.service` option.
    #[arg(long, default_value = "vfs")]
    pub service: String,
    /// A `dvdi/driver` value that reaches Polly (repeatable).
    #[arg(long = "driver", default_values_t = ["rexray".to_string()])]
    pub drivers: Vec<String>,
    /// A constraint field holding the agent's zone (repeatable).
    #[arg(long = "zone-attribute", default_values_t = ["zone".to_string(), "@zone".to_string()])]
    pub zone_attributes: Vec<String>,
}

fn usage(message: String) -> anyhow::Error {
    Exit { code: 2, message }.into()
}

fn unreachable(e: crate::client::Error) -> anyhow::Error {
    usage(format!("cannot read polly's state: {e}"))
}

/// Run `polly marathon ...`.
pub async fn run(client: &AdminClient, json: bool, cmd: Command) -> anyhow::Result<()> {
    let (provisioning, a) = match cmd {
        Command::Check(a) => (false, a),
        Command::Provision(a) => (true, a),
    };
    let text = if a.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| usage(format!("cannot read the definition from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(&a.file)
            .map_err(|e| usage(format!("cannot read {}: {e}", a.file)))?
    };
    let source = if a.file == "-" { "<stdin>" } else { &a.file };
    let def = parse(&text).map_err(|e| usage(format!("{source}: {e}")))?;
    let opts = Options {
        default_service: a.service,
        drivers: a.drivers,
        zone_attributes: a.zone_attributes,
    };
    let cluster = snapshot(client).await.map_err(unreachable)?;
    let report = check(&def, &cluster, &opts);
    let problems = || Exit {
        code: 1,
        message: format!(
            "{source}: {} problem(s) found{}",
            report.problems.len(),
            if provisioning {
                "; nothing provisioned"
            } else {
                ""
            }
        ),
    };
    if !provisioning || !report.ok {
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", render::report(source, &report));
        }
        return if report.ok {
            Ok(())
        } else {
            Err(problems().into())
        };
    }
    let outcome = provision(client, &report.actions)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("provisioning {source}")))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "report": report,
                "created": outcome.created,
                "claimed": outcome.claimed,
                "conflicts": outcome.conflicts,
            }))?
        );
    } else {
        print!("{}", render::outcome(&outcome));
    }
    if outcome.conflicts.is_empty() {
        Ok(())
    } else {
        Err(Exit {
            code: 1,
            message: format!("{source}: {} conflict(s)", outcome.conflicts.len()),
        }
        .into())
    }
}
