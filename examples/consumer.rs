//! An example Mesos framework that consumes Polly's disk offers, built on Polly's own
//! scheduler client (`polly::mesos::client::scheduler`): it subscribes to the storage-offer
//! endpoint (JSON or protobuf), takes the first offer with a RAW disk big enough (optionally
//! on one agent and of one profile), ACCEPTs it with a CREATE_DISK of `--size`, prints every
//! UPDATE_OPERATION_STATUS and acknowledges it; with `--destroy` it then DESTROY_DISKs the new
//! volume from a later offer. Exit code 0 when every operation FINISHED, 1 on a failed,
//! erroneous or dropped operation, an ERROR event, a lost stream or the timeout, 2 on usage
//! errors.
//!
//! ```sh
//! cargo run -- serve                       # in one terminal (with agents: see README)
//! cargo run --example consumer -- --size 64MB
//! cargo run --example consumer -- --content-type protobuf --size 1GiB --destroy
//! ```
//!
//! The last line printed on success is machine-readable:
//! `consumer: result framework=… agent=… volume=… size_mb=… destroyed=true|false`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, ValueEnum};
use polly::mesos::client::scheduler::{self, Caller, SubscribeOptions, Subscription};
use polly::mesos::client::MesosContentType;
use polly::mesos::v1::resource::disk_info::source::Type as SourceType;
use polly::mesos::v1::scheduler::{event, Event};
use polly::mesos::v1::{self, FrameworkInfo, OperationState};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Encoding {
    Json,
    Protobuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Target {
    Mount,
    Block,
}

/// An example Mesos framework that takes a disk offer from Polly and creates a volume.
#[derive(Debug, Parser)]
#[command(name = "consumer")]
struct Args {
    /// Polly's storage-offer endpoint (or a Mesos master), host:port or http://host:port.
    #[arg(long, default_value = "127.0.0.1:7980", env = "POLLY_OFFERS")]
    master: String,
    /// Encoding of calls and events.
    #[arg(long, value_enum, default_value = "json")]
    content_type: Encoding,
    /// Size of the volume to create, in Mesos units (1 MB = 1 MiB): 64, 64MB, 2GB, 1GiB.
    #[arg(long, default_value = "64MB", value_parser = parse_mb)]
    size: f64,
    /// Only take an offer from this agent id.
    #[arg(long)]
    agent: Option<String>,
    /// Only take a RAW disk of this profile (a Polly pool).
    #[arg(long)]
    profile: Option<String>,
    /// The volume's type.
    #[arg(long, value_enum, default_value = "mount")]
    target: Target,
    /// DESTROY_DISK the new volume afterwards (from a later offer of its agent).
    #[arg(long)]
    destroy: bool,
    /// FrameworkInfo.name.
    #[arg(long, default_value = "polly-example-consumer")]
    name: String,
    /// Subscribe with this framework id (e.g. the id the framework has at its Mesos master).
    #[arg(long)]
    framework_id: Option<String>,
    /// FrameworkInfo.roles (one role, MULTI_ROLE).
    #[arg(long, default_value = "*")]
    role: String,
    /// Give up when the whole run takes longer (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// TEARDOWN the framework before exiting (its reservations are kept).
    #[arg(long)]
    teardown: bool,
}

/// `64`, `64MB`, `64MiB`, `2G`, `1GiB`, `1TB` → Mesos MB (MiB).
fn parse_mb(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number like 64MB or 1GiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1.0,
        "g" | "gb" | "gib" => 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {u:?} (use MB, GB or TB)"
            ))
        }
    };
    let mb = (n * mult).ceil();
    if !(mb.is_finite() && mb >= 1.0) {
        return Err(format!("invalid size {s:?}: at least 1 MB"));
    }
    Ok(mb)
}

fn say(msg: impl AsRef<str>) {
    println!("consumer: {}", msg.as_ref());
}

fn state_name(s: &v1::OperationStatus) -> &'static str {
    OperationState::try_from(s.state)
        .map(|s| s.as_str_name())
        .unwrap_or("OPERATION_UNKNOWN")
}

/// One line per disk of an offer.
fn describe_disk(r: &v1::Resource) -> String {
    let mb = r.scalar.as_ref().map(|s| s.value).unwrap_or(0.0);
    let provider = r.provider_id.as_ref().map(|p| p.value.as_str());
    match scheduler::disk_source(r) {
        Some(src) => {
            let ty = SourceType::try_from(src.r#type)
                .map(|t| t.as_str_name())
                .unwrap_or("UNKNOWN");
            let mut s = format!("{ty} {mb} MB");
            if let Some(id) = &src.id {
                s.push_str(&format!(" volume {id}"));
            }
            if let Some(p) = &src.profile {
                s.push_str(&format!(" profile {p}"));
            }
            if let Some(p) = provider {
                s.push_str(&format!(" pool {p}"));
            }
            s
        }
        None => format!("{} {mb}", r.name),
    }
}

fn is_source(r: &v1::Resource, ty: SourceType) -> bool {
    r.name == "disk" && scheduler::disk_source(r).is_some_and(|s| s.r#type == ty as i32)
}

/// Where the run is.
enum Phase {
    /// Waiting for an offer with a RAW disk that fits.
    Create,
    /// CREATE_DISK accepted; waiting for its terminal status.
    Creating {
        op: String,
        agent: String,
    },
    /// Waiting for an offer of `agent` carrying the volume.
    Destroy {
        volume: String,
        agent: String,
    },
    Destroying {
        op: String,
    },
    Done,
}

struct Run {
    args: Args,
    caller: Caller,
    phase: Phase,
    run_id: String,
    offers_seen: usize,
    volume: Option<(String, String, f64)>,
    destroyed: bool,
}

impl Run {
    /// The RAW disk of `offer` this run would take, if any.
    fn fitting_raw<'a>(&self, offer: &'a v1::Offer) -> Option<&'a v1::Resource> {
        if let Some(a) = &self.args.agent {
            if &offer.agent_id.value != a {
                return None;
            }
        }
        offer.resources.iter().find(|r| {
            is_source(r, SourceType::Raw)
                && r.scalar.as_ref().is_some_and(|s| s.value >= self.args.size)
                && match &self.args.profile {
                    Some(p) => scheduler::disk_source(r)
                        .and_then(|s| s.profile.as_deref())
                        .is_some_and(|x| x == p),
                    None => true,
                }
        })
    }

    async fn on_offers(&mut self, offers: Vec<v1::Offer>) -> anyhow::Result<()> {
        let mut unused = Vec::new();
        for o in offers {
            self.offers_seen += 1;
            say(format!(
                "offer {} from agent {} ({}):",
                o.id.value, o.agent_id.value, o.hostname
            ));
            for r in &o.resources {
                say(format!("    {}", describe_disk(r)));
            }
            match &self.phase {
                Phase::Create => {
                    if let Some(raw) = self.fitting_raw(&o) {
                        let op = format!("{}-create", self.run_id);
                        let target = match self.args.target {
                            Target::Mount => SourceType::Mount,
                            Target::Block => SourceType::Block,
                        };
                        say(format!(
                            "accepting offer {} with CREATE_DISK of {} MB ({}) from pool {}, operation {op}",
                            o.id.value,
                            self.args.size,
                            target.as_str_name(),
                            raw.provider_id.as_ref().map(|p| p.value.as_str()).unwrap_or("-"),
                        ));
                        let operation = scheduler::create_disk(&op, raw, self.args.size, target);
                        // No filter: with --destroy the same agent is needed again soon.
                        self.caller
                            .accept(vec![o.id.clone()], vec![operation], Some(no_filter()))
                            .await
                            .context("ACCEPT with CREATE_DISK was refused")?;
                        self.phase = Phase::Creating {
                            op,
                            agent: o.agent_id.value.clone(),
                        };
                        continue;
                    }
                }
                Phase::Destroy { volume, agent } if &o.agent_id.value == agent => {
                    let disk = o.resources.iter().find(|r| {
                        scheduler::disk_source(r).and_then(|s| s.id.as_deref())
                            == Some(volume.as_str())
                    });
                    if let Some(disk) = disk {
                        let op = format!("{}-destroy", self.run_id);
                        say(format!(
                            "accepting offer {} with DESTROY_DISK of volume {volume}, operation {op}",
                            o.id.value
                        ));
                        let operation = scheduler::destroy_disk(&op, disk);
                        self.caller
                            .accept(vec![o.id.clone()], vec![operation], Some(no_filter()))
                            .await
                            .context("ACCEPT with DESTROY_DISK was refused")?;
                        self.phase = Phase::Destroying { op };
                        continue;
                    }
                }
                _ => {}
            }
            unused.push(o.id);
        }
        if !unused.is_empty() {
            // Hand them back; a short filter keeps the stream quiet while a later offer (after
            // capacity changes, or with the new volume for --destroy) can still come soon.
            self.caller
                .decline(unused, Some(1.0))
                .await
                .context("DECLINE was refused")?;
        }
        Ok(())
    }

    async fn on_status(&mut self, st: v1::OperationStatus) -> anyhow::Result<()> {
        let id = st
            .operation_id
            .as_ref()
            .map(|o| o.value.clone())
            .unwrap_or_default();
        let state = OperationState::try_from(st.state).unwrap_or(OperationState::OperationUnknown);
        let mut line = format!("operation {id}: {}", state_name(&st));
        if let Some(a) = &st.agent_id {
            line.push_str(&format!(" on agent {}", a.value));
        }
        if let Some(m) = st.message.as_deref().filter(|m| !m.is_empty()) {
            line.push_str(&format!(": {m}"));
        }
        say(line);
        for r in &st.converted_resources {
            say(format!("    converted to {}", describe_disk(r)));
        }
        if self
            .caller
            .acknowledge_operation_status(&st)
            .await
            .context("ACKNOWLEDGE_OPERATION_STATUS was refused")?
        {
            say(format!("operation {id}: acknowledged"));
        }
        let mine = match &self.phase {
            Phase::Creating { op, .. } | Phase::Destroying { op } => op == &id,
            _ => false,
        };
        if !mine || state == OperationState::OperationPending {
            return Ok(());
        }
        if state != OperationState::OperationFinished {
            bail!(
                "operation {id} ended {}: {}",
                state_name(&st),
                st.message.as_deref().unwrap_or("no message")
            );
        }
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Creating { agent, .. } => {
                let disk = st
                    .converted_resources
                    .iter()
                    .find(|r| scheduler::disk_source(r).is_some_and(|s| s.id.is_some()))
                    .ok_or_else(|| anyhow!("operation {id} FINISHED without a disk with an id"))?;
                let volume = scheduler::disk_source(disk)
                    .and_then(|s| s.id.clone())
                    .unwrap_or_default();
                let mb = disk.scalar.as_ref().map(|s| s.value).unwrap_or(0.0);
                say(format!(
                    "volume {volume} ({mb} MB) is reserved to framework {} and attached on agent {agent}",
                    self.caller.framework_id()
                ));
                self.volume = Some((volume.clone(), agent.clone(), mb));
                if self.args.destroy {
                    say(format!(
                        "waiting for an offer of agent {agent} with volume {volume}"
                    ));
                    self.phase = Phase::Destroy { volume, agent };
                }
            }
            Phase::Destroying { .. } => {
                say("volume destroyed");
                self.destroyed = true;
            }
            other => self.phase = other,
        }
        Ok(())
    }

    fn waiting_for(&self) -> String {
        match &self.phase {
            Phase::Create => {
                let mut s = format!("an offer with a RAW disk of at least {} MB", self.args.size);
                if let Some(p) = &self.args.profile {
                    s.push_str(&format!(" of profile {p}"));
                }
                if let Some(a) = &self.args.agent {
                    s.push_str(&format!(" from agent {a}"));
                }
                format!("{s} ({} offers seen)", self.offers_seen)
            }
            Phase::Creating { op, .. } | Phase::Destroying { op } => {
                format!("the final status of operation {op}")
            }
            Phase::Destroy { volume, agent } => {
                format!("an offer of agent {agent} with volume {volume}")
            }
            Phase::Done => "nothing".into(),
        }
    }
}

fn no_filter() -> v1::Filters {
    v1::Filters {
        refuse_seconds: Some(0.0),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.timeout;
    let master = args
        .master
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (ct, ct_name) = match args.content_type {
        Encoding::Json => (MesosContentType::Json, "JSON"),
        Encoding::Protobuf => (MesosContentType::Protobuf, "protobuf"),
    };
    let info = FrameworkInfo {
        user: "root".into(),
        name: args.name.clone(),
        id: args
            .framework_id
            .clone()
            .map(|value| v1::FrameworkId { value }),
        roles: vec![args.role.clone()],
        capabilities: vec![v1::framework_info::Capability {
            r#type: Some(v1::framework_info::capability::Type::MultiRole as i32),
        }],
        ..Default::default()
    };
    let opts = SubscribeOptions {
        content_type: ct,
        request_timeout: args.timeout.min(Duration::from_secs(30)),
        ..Default::default()
    };
    let mut sub = tokio::time::timeout_at(deadline, Subscription::subscribe(&master, info, opts))
        .await
        .map_err(|_| anyhow!("no SUBSCRIBED from {master} within {:?}", args.timeout))?
        .with_context(|| format!("cannot subscribe to {master}"))?;
    say(format!(
        "subscribed to {} as framework {} ({ct_name}, heartbeat every {:?})",
        sub.master(),
        sub.framework_id(),
        sub.heartbeat_interval()
    ));
    let mut run = Run {
        caller: sub.caller(),
        phase: Phase::Create,
        run_id: format!(
            "consumer-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        offers_seen: 0,
        volume: None,
        destroyed: false,
        args,
    };
    while !matches!(run.phase, Phase::Done) {
        let ev: Event = match tokio::time::timeout_at(deadline, sub.next_event()).await {
            Err(_) => bail!(
                "timed out after {:?} waiting for {}",
                run.args.timeout,
                run.waiting_for()
            ),
            Ok(r) => r.with_context(|| format!("while waiting for {}", run.waiting_for()))?,
        };
        match ev.r#type.and_then(|t| event::Type::try_from(t).ok()) {
            Some(event::Type::Offers) => {
                run.on_offers(ev.offers.map(|o| o.offers).unwrap_or_default())
                    .await?
            }
            Some(event::Type::UpdateOperationStatus) => {
                if let Some(u) = ev.update_operation_status {
                    run.on_status(u.status).await?;
                }
            }
            Some(event::Type::Rescind) => {
                if let Some(r) = ev.rescind {
                    say(format!("offer {} rescinded", r.offer_id.value));
                }
            }
            Some(event::Type::Error) => bail!(
                "the master sent ERROR: {}",
                ev.error.map(|e| e.message).unwrap_or_default()
            ),
            _ => {}
        }
    }
    if run.args.teardown {
        run.caller
            .teardown()
            .await
            .context("TEARDOWN was refused")?;
        say("framework torn down (its reservations are kept)");
    }
    let (volume, agent, mb) = run
        .volume
        .clone()
        .ok_or_else(|| anyhow!("no volume was created"))?;
    say(format!(
        "result framework={} agent={agent} volume={volume} size_mb={mb} destroyed={}",
        run.caller.framework_id(),
        run.destroyed
    ));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consumer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
