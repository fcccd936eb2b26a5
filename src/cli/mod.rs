//! The `polly` command line: its flags and subcommands, and `run`, which dispatches them.
//! `polly serve` runs the server; every other command is a client of the admin API that
//! prints a human table, or JSON with `--json` (one file per command group).

mod agent;
mod exit;
mod framework;
mod instance;
mod node;
mod offer;
mod operation;
mod orphan;
mod output;
mod reservation;
mod serve;
mod service;
mod store;
mod version;
mod volume;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::client::AdminClient;

pub use exit::exit_code;
pub use serve::shutdown_signal;

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
    /// Run the node agent: a Docker volume plugin that mounts Polly volumes on this host.
    Node(NodeArgs),
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
    /// CSI endpoint: unix://PATH or tcp://IP:PORT. Default unix://<data dir>/csi.sock.
    #[arg(long, env = "POLLY_CSI_LISTEN")]
    pub csi_listen: Option<crate::csi::CsiEndpoint>,
    /// Open Service Broker listen address (served only when `[broker]` has credentials).
    /// Default 127.0.0.1:7981.
    #[arg(long, env = "POLLY_BROKER_LISTEN")]
    pub broker_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// TOML config file; its `[node]` table is read (the rest is the server's).
    #[arg(long, env = "POLLY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Central polly's admin API. Default: `[node] server`, else --admin-url.
    #[arg(long, env = "POLLY_SERVER")]
    pub server: Option<String>,
    /// This node's instance id. Default: the hostname.
    #[arg(long, env = "POLLY_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// This node's availability zone.
    #[arg(long, env = "POLLY_ZONE")]
    pub zone: Option<String>,
    /// Docker plugin socket. Default /run/docker/plugins/polly.sock (plugin name `polly`).
    #[arg(long, env = "POLLY_PLUGIN_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Health and metrics listen address. Default 127.0.0.1:7982.
    #[arg(long, env = "POLLY_NODE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where volumes are mounted. Default /var/lib/polly/mounts.
    #[arg(long)]
    pub mount_root: Option<PathBuf>,
    /// Where the node keeps its state file. Default /var/lib/polly/node.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Service for volumes created without `-o service`. Default: central's only service.
    #[arg(long)]
    pub service: Option<String>,
    /// Size of volumes created without `-o size`. Default 1GiB.
    #[arg(long)]
    pub default_size: Option<String>,
    /// CENTRAL_PATH=LOCAL_PATH: where central's vfs/loop root is on this node (an NFS
    /// mount); repeatable.
    #[arg(long = "path-map")]
    pub path_map: Vec<String>,
    /// Seconds between reports to central (and retries of pending detaches). Default 30.
    #[arg(long)]
    pub report_interval_secs: Option<u64>,
    /// Seconds one call to central may take. Default 120.
    #[arg(long)]
    pub central_timeout_secs: Option<u64>,
    /// Serve CSI (Identity, Node, and Controller forwarded to --csi-server) on
    /// unix://PATH or tcp://IP:PORT. Default: `[node] csi_endpoint`, else off.
    #[arg(long, env = "POLLY_CSI_ENDPOINT")]
    pub csi_endpoint: Option<crate::csi::CsiEndpoint>,
    /// Central polly's CSI endpoint (its `[csi] listen`), where Controller calls are
    /// forwarded. Default: `[node] csi_server`, else Controller calls are UNAVAILABLE.
    #[arg(long, env = "POLLY_CSI_SERVER")]
    pub csi_server: Option<crate::csi::CsiEndpoint>,
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
    Create(CreateArgs),
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

/// The flags of `polly volume create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,
    /// Size: bytes, or with a unit (500MiB, 10GiB, 1TB).
    #[arg(long)]
    pub size: String,
    #[arg(long, default_value = "vfs")]
    pub service: String,
    #[arg(long)]
    pub pool: Option<String>,
    #[arg(long)]
    pub zone: Option<String>,
    /// single_writer, multi_reader or multi_writer.
    #[arg(long, default_value = "single_writer")]
    pub access_mode: String,
    /// key=value, repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Only this service may use the volume (repeatable).
    #[arg(long = "restrict-service")]
    pub restrict_services: Vec<String>,
    /// Only this Mesos framework is offered the volume (repeatable).
    #[arg(long = "restrict-framework")]
    pub restrict_frameworks: Vec<String>,
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

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = AdminClient::new(&cli.admin_url, cli.token.clone());
    let json = cli.json;
    match cli.command {
        Command::Serve(a) => serve::run(a, cli.token).await,
        Command::Node(a) => node::run(a, cli.admin_url, cli.token).await,
        Command::Version => version::run(&client, json).await,
        Command::Volume(cmd) => volume::run(&client, json, cmd).await,
        Command::Marathon(cmd) => Ok(crate::marathon::run(&client, json, cmd).await?),
        Command::Service(ListCmd::Ls) => service::ls(&client, json).await,
        Command::Instance(ListCmd::Ls) => instance::ls(&client, json).await,
        Command::Framework(ListCmd::Ls) => framework::ls(&client, json).await,
        Command::Offer(ListCmd::Ls) => offer::ls(&client, json).await,
        Command::Reservation(cmd) => reservation::run(&client, json, cmd).await,
        Command::Agent(cmd) => agent::run(&client, json, cmd).await,
        Command::Orphan(cmd) => orphan::run(&client, json, cmd).await,
        Command::Operation(ListCmd::Ls) => operation::ls(&client, json).await,
        Command::Store(cmd) => store::run(&client, json, cmd).await,
    }
}
