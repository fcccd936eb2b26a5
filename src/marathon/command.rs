//! `polly marathon check|provision <file|->`: read a definition, take a snapshot of Polly,
//! check, and (provision) carry out the plan. Exit codes for deploy pipelines: 0 deployable
//! (or provisioned), 1 problems found (nothing provisioned), 2 usage error (unreadable or
//! invalid definition) or Polly unreachable / refusing the admin call.

use std::io::Read;

use clap::{Args, Subcommand};

use super::{check, parse, provision, render, snapshot, Options, ParseError};
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
    #[arg(long = "driver", default_values_t = ["rexray".to_string(), "polly".to_string()])]
    pub drivers: Vec<String>,
    /// A constraint field holding the agent's zone (repeatable).
    #[arg(long = "zone-attribute", default_values_t = ["zone".to_string(), "@zone".to_string()])]
    pub zone_attributes: Vec<String>,
}

/// Why `polly marathon check|provision` did not succeed. Each has its exit code
/// ([`CommandError::exit_code`]), for deploy pipelines.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot read the definition from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("cannot read {file}: {error}")]
    Read { file: String, error: std::io::Error },
    /// `input`: the file name, or `<stdin>`.
    #[error("{input}: {error}")]
    Parse { input: String, error: ParseError },
    #[error("cannot read polly's state: {0}")]
    Unreachable(crate::client::Error),
    /// The check found problems (with `provision`, nothing was provisioned).
    #[error(
        "{input}: {count} problem(s) found{}",
        if *provisioning { "; nothing provisioned" } else { "" }
    )]
    Problems {
        input: String,
        count: usize,
        provisioning: bool,
    },
    #[error("provisioning {input}")]
    Provision {
        input: String,
        #[source]
        error: crate::client::Error,
    },
    /// Provisioning found volumes another app claims.
    #[error("{input}: {count} conflict(s)")]
    Conflicts { input: String, count: usize },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl CommandError {
    /// 1: problems or conflicts found (or the plan failed half-way); 2: usage error
    /// (unreadable or invalid definition) or Polly unreachable / refusing the admin call.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Stdin(_)
            | CommandError::Read { .. }
            | CommandError::Parse { .. }
            | CommandError::Unreachable(_) => 2,
            CommandError::Problems { .. }
            | CommandError::Provision { .. }
            | CommandError::Conflicts { .. }
            | CommandError::Json(_) => 1,
        }
    }
}

/// Run `polly marathon ...`.
pub async fn run(client: &AdminClient, json: bool, cmd: Command) -> Result<(), CommandError> {
    let (provisioning, a) = match cmd {
        Command::Check(a) => (false, a),
        Command::Provision(a) => (true, a),
    };
    let text = if a.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(CommandError::Stdin)?;
        s
    } else {
        std::fs::read_to_string(&a.file).map_err(|error| CommandError::Read {
            file: a.file.clone(),
            error,
        })?
    };
    let source = if a.file == "-" { "<stdin>" } else { &a.file };
    let def = parse(&text).map_err(|error| CommandError::Parse {
        input: source.to_string(),
        error,
    })?;
    let opts = Options {
        default_service: a.service,
        drivers: a.drivers,
        zone_attributes: a.zone_attributes,
    };
    let cluster = snapshot(client).await.map_err(CommandError::Unreachable)?;
    let report = check(&def, &cluster, &opts);
    if !provisioning || !report.ok {
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", render::report(source, &report));
        }
        return if report.ok {
            Ok(())
        } else {
            Err(CommandError::Problems {
                input: source.to_string(),
                count: report.problems.len(),
                provisioning,
            })
        };
    }
    let outcome =
        provision(client, &report.actions)
            .await
            .map_err(|error| CommandError::Provision {
                input: source.to_string(),
                error,
            })?;
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
        Err(CommandError::Conflicts {
            input: source.to_string(),
            count: outcome.conflicts.len(),
        })
    }
}
