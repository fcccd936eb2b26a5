//! The `polly` command line: `polly serve` runs the server; every other command is a client
//! of the admin API that prints a human table, or JSON with `--json`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::admin::VolumeView;
use crate::client::AdminClient;
use crate::config::{Config, Overrides};
use crate::driver::AccessMode;
use crate::volumes::{CreateVolume, Restriction};

#[derive(Debug, Parser)]
#[command(
    name = "polly",
    version,
    about = "Polly: a storage scheduler for Mesos frameworks and REX-Ray agents"
)]
pub struct Cli {
    /// Admin API of the polly server the client commands talk to.
    #[arg(
        long,
        global = true,
        env = "POLLY_ADMIN_URL",
        default_value = "http://127.0.0.1:7978"
    )]
    pub admin_url: String,
    /// Admin bearer token: sent by client commands; required by `serve` on every admin call.
    #[arg(long, global = true, env = "POLLY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (admin API, libStorage façade, reconciler).
    Serve(ServeArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Storage services and their capacity.
    #[command(subcommand)]
    Service(ListCmd),
    /// Hosts that reported themselves to polly.
    #[command(subcommand)]
    Instance(ListCmd),
    /// Mesos agents and REX-Ray hosts: list them (with lost/fenced state), fence a dead one.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Frameworks subscribed to the storage-offer endpoint.
    #[command(subcommand)]
    Framework(ListCmd),
    /// Outstanding storage offers.
    #[command(subcommand)]
    Offer(ListCmd),
    /// Volumes reserved by Mesos frameworks.
    #[command(subcommand)]
    Reservation(ReservationCmd),
    /// Back-end volumes polly has no record of (never deleted automatically).
    #[command(subcommand)]
    Orphan(OrphanCmd),
    /// Operations in flight (their intents).
    #[command(subcommand)]
    Operation(ListCmd),
    /// The store: dump, back up, erase.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Client and server versions.
    Version,
    /// Check Marathon app definitions against Polly and provision their volumes.
    #[command(subcommand)]
    Marathon(crate::marathon::Command),
}

/// An error that asks the binary for a particular exit code (still printed as one line).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "POLLY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (store and default vfs volumes). Default ./polly-data.
    #[arg(long, env = "POLLY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin API listen address. Default 127.0.0.1:7978.
    #[arg(long, env = "POLLY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// libStorage façade listen address. Default 127.0.0.1:7979.
    #[arg(long, env = "POLLY_LIBSTORAGE_LISTEN")]
    pub libstorage_listen: Option<SocketAddr>,
    /// Storage-offer endpoint (Mesos v1 scheduler API) listen address. Default 127.0.0.1:7980.
    #[arg(long, env = "POLLY_OFFERS_LISTEN")]
    pub offers_listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum ListCmd {
    /// List.
    Ls,
}

#[derive(Debug, Subcommand)]
pub enum ReservationCmd {
    /// List.
    Ls,
    /// Release what a framework holds: detach each volume and drop the reservation (the
    /// volumes stay). Refused before the framework's teardown grace has passed.
    Release {
        framework_id: String,
        /// Only this volume.
        #[arg(long = "volume")]
        volume: Option<String>,
        /// Release before the grace has passed (or for a framework that never tore down).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// List agents: from the master's offers, the operator API, static config, REX-Ray
    /// instances and lost/fenced records.
    Ls,
    /// Assert that a node is powered off: force-detach every volume attached to it, so the
    /// volumes can be attached elsewhere. Only for a node that is really off.
    Fence {
        /// Agent id, or instance id of a host known from REX-Ray.
        id: String,
        /// Confirm: the node is off and nothing on it still writes to its volumes.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrphanCmd {
    /// List orphans, and records whose back-end volume is missing.
    Ls,
    /// Create the store record for an orphan, so polly manages it.
    Adopt {
        service: String,
        driver_id: String,
        /// Name of the record; default: the back-end's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete an orphan from its back-end (only while it is still an orphan).
    Rm {
        service: String,
        driver_id: String,
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// List managed volumes; `--all` adds back-end volumes polly does not manage.
    Ls {
        #[arg(long)]
        all: bool,
    },
    /// Show one volume (by id, or by name).
    Inspect(Target),
    /// Create a volume (idempotent by service + name).
    Create {
        name: String,
        /// Size: bytes, or with a unit (500MiB, 10GiB, 1TB).
        #[arg(long)]
        size: String,
        #[arg(long, default_value = "vfs")]
        service: String,
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        /// single_writer, multi_reader or multi_writer.
        #[arg(long, default_value = "single_writer")]
        access_mode: String,
        /// key=value, repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Only this service may use the volume (repeatable).
        #[arg(long = "restrict-service")]
        restrict_services: Vec<String>,
        /// Only this Mesos framework is offered the volume (repeatable).
        #[arg(long = "restrict-framework")]
        restrict_frameworks: Vec<String>,
    },
    /// Delete a volume (it must be detached).
    Rm(Target),
    /// Attach a volume to an instance.
    Attach {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        instance: String,
        #[arg(long)]
        device: Option<String>,
    },
    /// Detach a volume from an instance, or from all with --force.
    Detach {
        #[command(flatten)]
        target: Target,
        #[arg(long, required_unless_present = "force")]
        instance: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Restrict a volume to services and/or frameworks.
    Restrict {
        #[command(flatten)]
        target: Target,
        #[arg(long = "to-service")]
        services: Vec<String>,
        #[arg(long = "to-framework")]
        frameworks: Vec<String>,
    },
    /// Lift restrictions (all of them when none is named).
    Unrestrict {
        #[command(flatten)]
        target: Target,
        #[arg(long = "to-service")]
        services: Vec<String>,
        #[arg(long = "to-framework")]
        frameworks: Vec<String>,
    },
    /// Set labels: key=value ...
    Label {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Remove labels by key.
    Unlabel {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct Target {
    /// Volume id or name.
    pub volume: String,
    /// Service to look the name up in (when names repeat across services).
    #[arg(long = "in-service")]
    pub in_service: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Print every record.
    Dump,
    /// Write every record to a JSON file.
    Backup { file: PathBuf },
    /// Remove every record (back-end volumes stay and become orphans).
    Erase {
        #[arg(long)]
        yes: bool,
    },
}

/// Parse `10GiB`, `500MB`, `1T`, `4096`.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().with_context(|| {
        format!("invalid size {s:?}: expected a number with an optional unit like 10GiB")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => bail!(
            "invalid size {s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
        ),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        bail!("invalid size {s:?}: out of range");
    }
    Ok(bytes as u64)
}

/// `12884901888` → `12 GiB`.
pub fn human_size(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("invalid label {kv:?}: expected key=value"))
        })
        .collect()
}

fn access_mode(s: &str) -> anyhow::Result<AccessMode> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).with_context(|| {
        format!("invalid access mode {s:?}: use single_writer, multi_reader or multi_writer")
    })
}

/// Print rows as an aligned table.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn set(v: &BTreeSet<String>) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter().cloned().collect::<Vec<_>>().join(",")
    }
}

/// The STATUS column: the lifecycle state, except that an available volume with an
/// attachment reads `attached`, as REX-Ray users expect.
fn display_status(v: &VolumeView) -> String {
    match v.status {
        crate::admin::VolumeStatusView::Available if !v.attachments.is_empty() => "attached".into(),
        s => format!("{s:?}").to_lowercase(),
    }
}

fn volume_rows(vols: &[VolumeView]) -> Vec<Vec<String>> {
    vols.iter()
        .map(|v| {
            vec![
                v.id.clone(),
                v.service.clone(),
                v.name.clone(),
                human_size(v.size_bytes),
                display_status(v),
                if v.attachments.is_empty() {
                    "-".into()
                } else {
                    v.attachments
                        .iter()
                        .map(|a| a.instance_id.clone())
                        .collect::<Vec<_>>()
                        .join(",")
                },
                set(&v.restrict_services),
                set(&v.restrict_frameworks),
                if v.labels.is_empty() {
                    "-".into()
                } else {
                    v.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ]
        })
        .collect()
}

const VOLUME_HEADERS: [&str; 9] = [
    "ID",
    "SERVICE",
    "NAME",
    "SIZE",
    "STATUS",
    "ATTACHED",
    "SERVICES",
    "FRAMEWORKS",
    "LABELS",
];

fn show_volume(json: bool, v: &VolumeView) -> anyhow::Result<()> {
    if json {
        return print_json(v);
    }
    table(&VOLUME_HEADERS, volume_rows(std::slice::from_ref(v)));
    Ok(())
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = AdminClient::new(&cli.admin_url, cli.token.clone());
    let json = cli.json;
    match cli.command {
        Command::Serve(a) => {
            let overrides = Overrides {
                data_dir: a.data_dir,
                admin_listen: a.admin_listen,
                admin_token: cli.token,
                libstorage_listen: a.libstorage_listen,
                offers_listen: a.offers_listen,
            };
            // Before anything slow (store open, start-up reconciliation), so SIGTERM is a
            // graceful stop from the start.
            let shutdown = shutdown_signal();
            let config = Config::load(a.config.as_deref(), &overrides)?;
            crate::failpoints::setup_from_env().map_err(anyhow::Error::msg)?;
            let prepared = crate::server::prepare(config)?;
            crate::server::run(prepared, shutdown).await
        }
        Command::Version => {
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
        Command::Volume(cmd) => volume(&client, json, cmd).await,
        Command::Marathon(cmd) => crate::marathon::run(&client, json, cmd).await,
        Command::Service(ListCmd::Ls) => {
            let s = client.services().await?;
            if json {
                return print_json(&s);
            }
            let mut rows = Vec::new();
            for svc in &s {
                if let Some(e) = &svc.capacity_error {
                    rows.push(vec![
                        svc.name.clone(),
                        svc.driver.clone(),
                        "-".into(),
                        "-".into(),
                        format!("unavailable: {e}"),
                        "".into(),
                        svc.volumes.to_string(),
                        human_size(svc.provisioned_bytes),
                        poll_state(svc),
                    ]);
                }
                for c in &svc.capacity {
                    rows.push(vec![
                        svc.name.clone(),
                        svc.driver.clone(),
                        c.pool.clone(),
                        c.zone.clone().unwrap_or_else(|| "-".into()),
                        human_size(c.total_bytes),
                        human_size(c.free_bytes),
                        svc.volumes.to_string(),
                        human_size(svc.provisioned_bytes),
                        poll_state(svc),
                    ]);
                }
            }
            table(
                &[
                    "SERVICE",
                    "DRIVER",
                    "POOL",
                    "ZONE",
                    "TOTAL",
                    "FREE",
                    "VOLUMES",
                    "PROVISIONED",
                    "POLLED",
                ],
                rows,
            );
            Ok(())
        }
        Command::Instance(ListCmd::Ls) => {
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
        Command::Framework(ListCmd::Ls) => {
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
        Command::Offer(ListCmd::Ls) => {
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
        Command::Reservation(ReservationCmd::Ls) => {
            let r = client.reservations().await?;
            if json {
                return print_json(&r);
            }
            let rows = r
                .iter()
                .map(|r| {
                    vec![
                        r.framework_id.clone(),
                        r.role.clone(),
                        r.principal.clone().unwrap_or_else(|| "-".into()),
                        r.volume_id.clone(),
                        human_size(r.bytes),
                    ]
                })
                .collect();
            table(&["FRAMEWORK", "ROLE", "PRINCIPAL", "VOLUME", "SIZE"], rows);
            Ok(())
        }
        Command::Reservation(ReservationCmd::Release {
            framework_id,
            volume,
            force,
        }) => {
            let r = client
                .release_reservations(&framework_id, volume.as_deref(), force)
                .await?;
            if json {
                return print_json(&r);
            }
            for v in &r.released {
                println!("released {v} (the volume still exists)");
            }
            println!(
                "framework {} holds {} more reservation(s)",
                r.framework_id, r.remaining
            );
            Ok(())
        }
        Command::Agent(AgentCmd::Fence { id, yes }) => {
            if !yes {
                bail!("agent fence force-detaches every volume attached to {id}; it is safe only if {id} is powered off. Add --yes to confirm");
            }
            let r = client.fence(&id).await?;
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
        Command::Agent(AgentCmd::Ls) => {
            let agents = client.agents().await?;
            if json {
                return print_json(&agents);
            }
            let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
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
                                (Some(crate::store::NodeState::Fenced), _) => "fenced",
                                (Some(crate::store::NodeState::Fencing), _) => "fencing",
                                (Some(crate::store::NodeState::Lost), _) | (None, true) => "lost",
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
        Command::Orphan(OrphanCmd::Adopt {
            service,
            driver_id,
            name,
        }) => {
            let v = client.adopt_orphan(&service, &driver_id, name).await?;
            if json {
                return print_json(&v);
            }
            println!(
                "adopted {driver_id} of service {service} as volume {} ({})",
                v.id, v.name
            );
            Ok(())
        }
        Command::Orphan(OrphanCmd::Rm {
            service,
            driver_id,
            yes,
        }) => {
            if !yes {
                bail!("orphan rm deletes back-end volume {driver_id} and its data; add --yes to confirm");
            }
            client.remove_orphan(&service, &driver_id).await?;
            if json {
                return print_json(&serde_json::json!({"deleted": driver_id, "service": service}));
            }
            println!("deleted orphan {driver_id} of service {service}");
            Ok(())
        }
        Command::Orphan(OrphanCmd::Ls) => {
            let r = client.orphans().await?;
            if json {
                return print_json(&r);
            }
            table(
                &["SERVICE", "DRIVER ID", "NAME", "SIZE"],
                r.orphans
                    .iter()
                    .map(|o| {
                        vec![
                            o.service.clone(),
                            o.driver_id.clone(),
                            o.name.clone(),
                            human_size(o.size_bytes),
                        ]
                    })
                    .collect(),
            );
            for m in &r.missing {
                eprintln!(
                    "missing: volume {} ({}/{}) has no back-end volume {}",
                    m.volume_id, m.service, m.name, m.driver_id
                );
            }
            for (s, e) in &r.unreachable {
                eprintln!("unreachable: service {s}: {e}");
            }
            Ok(())
        }
        Command::Operation(ListCmd::Ls) => {
            let ops = client.operations().await?;
            if json {
                return print_json(&ops);
            }
            table(
                &["ID", "VOLUME", "SERVICE", "OPERATION", "STARTED"],
                ops.iter()
                    .map(|i| {
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
        Command::Store(StoreCmd::Dump) => print_json(&client.dump().await?),
        Command::Store(StoreCmd::Backup { file }) => {
            let dump = client.dump().await?;
            let tmp = file.with_extension("tmp");
            {
                let mut f = std::fs::File::create(&tmp)
                    .with_context(|| format!("cannot write {}", tmp.display()))?;
                serde_json::to_writer_pretty(&mut f, &dump)?;
                f.write_all(b"\n")?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &file)
                .with_context(|| format!("cannot write {}", file.display()))?;
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
        Command::Store(StoreCmd::Erase { yes }) => {
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

async fn volume(client: &AdminClient, json: bool, cmd: VolumeCmd) -> anyhow::Result<()> {
    let v = match cmd {
        VolumeCmd::Ls { all } => {
            let l = client.volumes(all).await?;
            if json {
                return print_json(&l);
            }
            table(&VOLUME_HEADERS, volume_rows(&l.volumes));
            if let Some(u) = &l.unmanaged {
                if !u.is_empty() {
                    println!();
                    table(
                        &["UNMANAGED", "SERVICE", "NAME", "SIZE"],
                        u.iter()
                            .map(|o| {
                                vec![
                                    o.driver_id.clone(),
                                    o.service.clone(),
                                    o.name.clone(),
                                    human_size(o.size_bytes),
                                ]
                            })
                            .collect(),
                    );
                }
            }
            return Ok(());
        }
        VolumeCmd::Inspect(t) => {
            let v = client.inspect(&t.volume, t.in_service.as_deref()).await?;
            // Inspect shows every field: JSON is the readable form of one record.
            return print_json(&v);
        }
        VolumeCmd::Create {
            name,
            size,
            service,
            pool,
            zone,
            access_mode: mode,
            labels,
            restrict_services,
            restrict_frameworks,
        } => {
            let req = CreateVolume {
                service,
                name,
                size_bytes: parse_size(&size)?,
                pool,
                zone,
                access_mode: access_mode(&mode)?,
                labels: parse_labels(&labels)?,
                restrict_services: restrict_services.into_iter().collect(),
                restrict_frameworks: restrict_frameworks.into_iter().collect(),
                fields: BTreeMap::new(),
            };
            client.create(&req).await?
        }
        VolumeCmd::Rm(t) => {
            client.delete(&t.volume, t.in_service.as_deref()).await?;
            if json {
                return print_json(&serde_json::json!({"deleted": t.volume}));
            }
            println!("deleted {}", t.volume);
            return Ok(());
        }
        VolumeCmd::Attach {
            target,
            instance,
            device,
        } => {
            client
                .attach(
                    &target.volume,
                    target.in_service.as_deref(),
                    &instance,
                    device,
                )
                .await?
        }
        VolumeCmd::Detach {
            target,
            instance,
            force,
        } => {
            client
                .detach(
                    &target.volume,
                    target.in_service.as_deref(),
                    instance,
                    force,
                )
                .await?
        }
        VolumeCmd::Restrict {
            target,
            services,
            frameworks,
        } => {
            let r = Restriction {
                services: services.into_iter().collect(),
                frameworks: frameworks.into_iter().collect(),
            };
            client
                .restrict(&target.volume, target.in_service.as_deref(), &r)
                .await?
        }
        VolumeCmd::Unrestrict {
            target,
            services,
            frameworks,
        } => {
            let r = Restriction {
                services: services.into_iter().collect(),
                frameworks: frameworks.into_iter().collect(),
            };
            client
                .unrestrict(&target.volume, target.in_service.as_deref(), &r)
                .await?
        }
        VolumeCmd::Label { target, labels } => {
            client
                .label(
                    &target.volume,
                    target.in_service.as_deref(),
                    parse_labels(&labels)?,
                )
                .await?
        }
        VolumeCmd::Unlabel { target, keys } => {
            client
                .unlabel(&target.volume, target.in_service.as_deref(), keys)
                .await?
        }
    };
    show_volume(json, &v)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled: a signal that arrives while the server is still opening its
/// store or reconciling at start-up (seconds with a large store) is kept for the future
/// instead of killing the process with the default action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The capacity poller's view of a service, for `polly service ls`.
fn poll_state(s: &crate::volumes::ServiceInfo) -> String {
    match (&s.polled_at, s.available) {
        (Some(t), true) => t.clone(),
        (_, false) => match &s.poll_error {
            Some(e) => format!("unavailable: {e}"),
            None => "not yet".into(),
        },
        (None, true) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_size("2TB").unwrap(), 2_000_000_000_000);
        for bad in ["", "-1", "0", "10XB", "GiB", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(human_size(10 << 30), "10 GiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(12), "12 B");
    }
}
