//! Property test of the storage-offer endpoint as frameworks see it: random sequences of
//! frameworks (JSON and protobuf) subscribing, accepting CREATE_DISK / RESERVE / UNRESERVE /
//! DESTROY_DISK, declining with filters, letting offers time out, while the capacity under
//! them changes (volumes created and deleted through the admin API, and one back-end going
//! down and coming back through the fault injector's switch file), each case against a real
//! `polly serve` with two small vfs pools. The pure engine has its own property test
//! (`src/offers/tests.rs`); this one checks what crosses the wire and lands in the store.
//!
//! After every step, from the events received and the admin API:
//! - per pool, the frameworks' shares in outstanding offers (a framework's share counted once
//!   however many agents show it) never exceed the pool's free capacity (quota minus the
//!   volumes on the back-end) minus the headroom, and an unavailable pool is not offered;
//! - no volume is in the outstanding offers of two frameworks, or offered to a framework it
//!   is neither restricted to nor reserved by;
//! - no volume is attached twice (store and back-end), the store and the back-ends agree on
//!   every volume's attachments, every held volume is attached to the instance of the agent
//!   it was accepted on, and the reservations are exactly the ones the finished operations
//!   made;
//! - every accepted operation ends with exactly one terminal status, which matches the
//!   store; a DECLINE filter is honoured; a RESCIND names an offer the framework was made;
//! - an operation on a pool, or on a volume in a pool, whose back-end Polly knows is down
//!   (the outage began and a capacity poll saw it) is DROPPED, never attempted: it does not
//!   end FAILED, and what it would have changed (the reservation, the attachment) stays.
//!
//! The capacity checks run once Polly has seen a change made behind its back (a capacity
//! poll after it, then a few allocation rounds): before that no scheduler can know.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::fakes::framework::{subscribe, Framework};
use harness::Polly;
use polly::client::AdminClient;
use polly::mesos::client::MesosContentType;
use polly::offers::DiskOffer;
use proptest::prelude::*;
use serde_json::{json, Value};

const POOLS: [&str; 2] = ["pa", "pb"];
const QUOTA_MB: u64 = 400;
const HEADROOM_MB: u64 = 50;
const AGENTS: [(&str, &str); 2] = [("agent-1", "i-1"), ("agent-2", "i-2")];
/// Allocation rounds run this often; a settle waits for a few of them.
const ROUND_MS: u64 = 100;

fn config(switch: &Path) -> String {
    format!(
        r#"
[[services]]
name = "pa"
driver = "vfs"
zone = "z"
quota_bytes = {quota}
[services.fault]
error_rate = 1.0
active_while_exists = "{switch}"

[[services]]
name = "pb"
driver = "vfs"
zone = "z"
quota_bytes = {quota}

[mesos]
agents = [
  {{ id = "agent-1", hostname = "host-1", zone = "z" }},
  {{ id = "agent-2", hostname = "host-2", zone = "z" }},
]

[offers]
poll_interval_secs = 0.2
allocation_interval_ms = {ROUND_MS}
offer_timeout_secs = 1.5
headroom_bytes = {headroom}
[offers.instances]
agent-1 = "i-1"
agent-2 = "i-2"
"#,
        quota = QUOTA_MB << 20,
        headroom = HEADROOM_MB << 20,
        switch = switch.display()
    )
}

fn pool_id(service: &str) -> String {
    format!("{service}/default/z")
}

/// One step of a case. Indices pick among what exists at that moment (modulo its length), so
/// every sequence is meaningful and shrinking keeps it so.
#[derive(Debug, Clone)]
enum Step {
    Subscribe {
        protobuf: bool,
    },
    CreateDisk {
        fw: usize,
        pick: usize,
        percent: u32,
    },
    Reserve {
        fw: usize,
        pick: usize,
    },
    Unreserve {
        fw: usize,
        pick: usize,
    },
    DestroyDisk {
        fw: usize,
        pick: usize,
    },
    Decline {
        fw: usize,
        refuse_secs: f64,
    },
    Wait {
        ms: u64,
    },
    Outage {
        down: bool,
    },
    Fill {
        pool: usize,
        mb: u64,
    },
    Drain {
        pick: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => any::<bool>().prop_map(|protobuf| Step::Subscribe { protobuf }),
        5 => (0..4usize, 0..8usize, 1..=130u32)
            .prop_map(|(fw, pick, percent)| Step::CreateDisk { fw, pick, percent }),
        2 => (0..4usize, 0..8usize).prop_map(|(fw, pick)| Step::Reserve { fw, pick }),
        1 => (0..4usize, 0..8usize).prop_map(|(fw, pick)| Step::Unreserve { fw, pick }),
        2 => (0..4usize, 0..8usize).prop_map(|(fw, pick)| Step::DestroyDisk { fw, pick }),
        2 => (0..4usize, prop::sample::select(vec![0.0, 0.5, 3600.0]))
            .prop_map(|(fw, refuse_secs)| Step::Decline { fw, refuse_secs }),
        2 => (100..2000u64).prop_map(|ms| Step::Wait { ms }),
        1 => any::<bool>().prop_map(|down| Step::Outage { down }),
        1 => (0..2usize, 20..300u64).prop_map(|(pool, mb)| Step::Fill { pool, mb }),
        1 => (0..8usize).prop_map(|pick| Step::Drain { pick }),
    ]
}

/// What the test knows of one framework, from its own stream.
struct Fw {
    conn: Framework,
    /// Offers made to it and not yet used, declined or rescinded, by offer id.
    offers: BTreeMap<String, Value>,
    /// Every offer id it was ever made.
    seen: BTreeSet<String>,
    /// DECLINE filters: agent → (until, the newest offer number when the filter was set).
    filters: Vec<(String, Instant, u64)>,
}

/// The case's model of what Polly must hold.
#[derive(Default)]
struct Model {
    /// Volumes held: volume id → (framework id, agent id it was mapped to).
    held: BTreeMap<String, (String, String)>,
    /// Every status received, by (framework id, operation id), in order.
    statuses: BTreeMap<(String, String), Vec<String>>,
    /// The message of the last status received, by (framework id, operation id).
    messages: BTreeMap<(String, String), String>,
    /// Operations accepted (with an id), by (framework id, operation id).
    accepted: BTreeSet<(String, String)>,
    /// Filler volumes created through the admin API.
    fillers: Vec<String>,
    down: bool,
    next_op: usize,
}

const TERMINAL: [&str; 5] = [
    "OPERATION_FINISHED",
    "OPERATION_FAILED",
    "OPERATION_ERROR",
    "OPERATION_DROPPED",
    "OPERATION_UNKNOWN",
];

fn offer_number(id: &str) -> u64 {
    id.rsplit("-O")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

struct Case {
    polly: Polly,
    client: AdminClient,
    switch: PathBuf,
    fws: Vec<Fw>,
    m: Model,
    log: String,
}

impl Case {
    fn note(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.log, "    {}", s.as_ref());
    }

    /// Read every event already delivered to every framework; acknowledge terminal statuses.
    async fn pump(&mut self) -> Result<(), String> {
        for i in 0..self.fws.len() {
            loop {
                let ev = match self.fws[i].conn.skipped.pop_front() {
                    Some(ev) => ev,
                    None => match self.fws[i].conn.events.try_recv() {
                        Ok(ev) => ev,
                        Err(_) => break,
                    },
                };
                self.event(i, ev).await?;
            }
        }
        Ok(())
    }

    async fn event(&mut self, i: usize, ev: Value) -> Result<(), String> {
        let fw_id = self.fws[i].conn.id.clone();
        match ev["type"].as_str().unwrap_or("") {
            "OFFERS" => {
                for o in ev["offers"]["offers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    let id = o["id"]["value"].as_str().unwrap_or("").to_string();
                    let agent = o["agent_id"]["value"].as_str().unwrap_or("").to_string();
                    let n = offer_number(&id);
                    let now = Instant::now();
                    let f = &self.fws[i];
                    if let Some((_, until, _)) = f
                        .filters
                        .iter()
                        .find(|(a, until, newest)| *a == agent && *until > now && n > *newest)
                    {
                        return Err(format!(
                            "framework {fw_id} was offered {agent} ({id}) {:?} before its DECLINE filter ends",
                            *until - now
                        ));
                    }
                    self.fws[i].seen.insert(id.clone());
                    self.fws[i].offers.insert(id, o);
                }
            }
            "RESCIND" => {
                let id = ev["rescind"]["offer_id"]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if !self.fws[i].seen.contains(&id) {
                    return Err(format!(
                        "framework {fw_id} got RESCIND of {id}, which it was never offered"
                    ));
                }
                self.fws[i].offers.remove(&id);
            }
            "UPDATE_OPERATION_STATUS" => {
                let st = &ev["update_operation_status"]["status"];
                let op = st["operation_id"]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let state = st["state"].as_str().unwrap_or("").to_string();
                let message = st["message"].as_str().unwrap_or("").to_string();
                self.m.messages.insert((fw_id.clone(), op.clone()), message);
                self.m
                    .statuses
                    .entry((fw_id.clone(), op.clone()))
                    .or_default()
                    .push(state.clone());
                if let Some(uuid) = st["uuid"]["value"].as_str() {
                    if TERMINAL.contains(&state.as_str()) {
                        let mut ack = json!({"operation_id": {"value": op}, "uuid": uuid});
                        if let Some(a) = st.get("agent_id") {
                            ack["agent_id"] = a.clone();
                        }
                        let (code, body) = self.fws[i]
                            .conn
                            .post(&json!({"type": "ACKNOWLEDGE_OPERATION_STATUS",
                                "framework_id": {"value": fw_id},
                                "acknowledge_operation_status": ack}))
                            .await;
                        if code != 202 {
                            return Err(format!("acknowledgement refused: {code} {body}"));
                        }
                    }
                }
            }
            "SUBSCRIBED" | "HEARTBEAT" => {}
            other => return Err(format!("unexpected event {other}: {ev}")),
        }
        Ok(())
    }

    /// Keep reading events for `ms`.
    async fn pump_for(&mut self, ms: u64) -> Result<(), String> {
        let end = Instant::now() + Duration::from_millis(ms);
        loop {
            self.pump().await?;
            if Instant::now() >= end {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for the terminal status of an operation, reading every framework's events.
    async fn terminal(&mut self, fw_id: &str, op: &str) -> Result<String, String> {
        let key = (fw_id.to_string(), op.to_string());
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            self.pump().await?;
            if let Some(s) = self
                .m
                .statuses
                .get(&key)
                .and_then(|v| v.iter().find(|s| TERMINAL.contains(&s.as_str())))
            {
                return Ok(s.clone());
            }
            if Instant::now() >= end {
                return Err(format!(
                    "operation {op} of {fw_id}: no terminal status within 30 s (got {:?})",
                    self.m.statuses.get(&key)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until Polly has read capacity after now, then a few allocation rounds.
    async fn settle(&mut self) -> Result<(), String> {
        let since = std::time::SystemTime::now();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let svcs = self.client.services().await.map_err(|e| e.to_string())?;
            let fresh = svcs.iter().all(|s| {
                let pa_down = s.name == "pa" && self.m.down;
                if pa_down {
                    return !s.available;
                }
                s.polled_at
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .is_some_and(|t| t > since)
            });
            if fresh {
                break;
            }
            if Instant::now() >= end {
                return Err(format!("capacity never re-read: {svcs:?}"));
            }
            self.pump_for(50).await?;
        }
        self.pump_for(4 * ROUND_MS).await
    }

    /// Open a new operation id.
    fn op_id(&mut self) -> String {
        self.m.next_op += 1;
        format!("op-{}", self.m.next_op)
    }

    /// ACCEPT `offer` of framework `i` with `operation`; returns its terminal state.
    async fn accept(
        &mut self,
        i: usize,
        offer: &Value,
        operation: Value,
    ) -> Result<String, String> {
        let fw_id = self.fws[i].conn.id.clone();
        let op = operation["id"]["value"].as_str().unwrap().to_string();
        let offer_id = offer["id"]["value"].as_str().unwrap().to_string();
        self.fws[i].offers.remove(&offer_id);
        let (code, body) = self.fws[i]
            .conn
            .post(&json!({"type": "ACCEPT", "framework_id": {"value": fw_id},
                "accept": {"offer_ids": [offer["id"].clone()], "operations": [operation],
                    "filters": {"refuse_seconds": 0}}}))
            .await;
        if code != 202 {
            return Err(format!("ACCEPT answered {code}: {body}"));
        }
        self.m.accepted.insert((fw_id.clone(), op.clone()));
        let state = self.terminal(&fw_id, &op).await?;
        let message = self.m.messages.get(&(fw_id, op.clone())).cloned();
        self.note(format!(
            "{op} on {offer_id}: {state} ({})",
            message.unwrap_or_default()
        ));
        Ok(state)
    }

    fn subscribed(&self, fw: usize) -> Option<usize> {
        (!self.fws.is_empty()).then(|| fw % self.fws.len())
    }

    /// The framework's outstanding offers, oldest first.
    fn offers_of(&self, i: usize) -> Vec<Value> {
        let mut v: Vec<Value> = self.fws[i].offers.values().cloned().collect();
        v.sort_by_key(|o| offer_number(o["id"]["value"].as_str().unwrap_or("")));
        v
    }

    fn volumes_held_by(&self, fw_id: &str) -> Vec<String> {
        self.m
            .held
            .iter()
            .filter(|(_, (f, _))| f == fw_id)
            .map(|(v, _)| v.clone())
            .collect()
    }

    async fn run(&mut self, s: &Step) -> Result<(), String> {
        match *s {
            Step::Subscribe { protobuf } => {
                if self.fws.len() < 4 {
                    self.add_framework(protobuf).await;
                }
            }
            Step::CreateDisk { fw, pick, percent } => {
                let Some(i) = self.subscribed(fw) else {
                    return Ok(());
                };
                let offers = self.offers_of(i);
                let raws: Vec<(Value, Value)> = offers
                    .iter()
                    .flat_map(|o| {
                        o["resources"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|r| r["disk"]["source"]["type"] == "RAW")
                            .map(move |r| (o.clone(), r))
                    })
                    .collect();
                if raws.is_empty() {
                    self.note("no RAW disk offered: skipped");
                    return Ok(());
                }
                let (offer, raw) = raws[pick % raws.len()].clone();
                let offered = raw["scalar"]["value"].as_f64().unwrap_or(0.0);
                let mb = ((offered * f64::from(percent) / 100.0).floor()).max(1.0);
                let pool = raw["provider_id"]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let agent = offer["agent_id"]["value"].as_str().unwrap().to_string();
                let mut source = raw.clone();
                source["scalar"]["value"] = json!(mb);
                let op = self.op_id();
                self.note(format!(
                    "{op}: CREATE_DISK {mb} of {offered} MB of {pool} on {agent}"
                ));
                let state = self
                    .accept(
                        i,
                        &offer,
                        json!({"type": "CREATE_DISK", "id": {"value": op},
                            "create_disk": {"source": source, "target_type": "MOUNT"}}),
                    )
                    .await?;
                let fw_id = self.fws[i].conn.id.clone();
                let vols = self
                    .client
                    .volumes(false)
                    .await
                    .map_err(|e| e.to_string())?;
                let made: Vec<_> = vols
                    .volumes
                    .iter()
                    .filter(|v| {
                        v.labels.get("mesos.operation_id") == Some(&op)
                            && v.status == polly::admin::VolumeStatusView::Available
                    })
                    .collect();
                match state.as_str() {
                    "OPERATION_FINISHED" => {
                        if mb > offered {
                            return Err(format!(
                                "{op}: {mb} MB accepted from an offer of {offered}"
                            ));
                        }
                        let [v] = made.as_slice() else {
                            return Err(format!("{op} finished with volumes {made:?}"));
                        };
                        if v.size_bytes != (mb as u64) << 20 || pool_id(&v.service) != pool {
                            return Err(format!("{op} made the wrong volume: {v:?}"));
                        }
                        self.m.held.insert(v.id.clone(), (fw_id, agent));
                    }
                    other => {
                        if !made.is_empty() {
                            return Err(format!("{op} ended {other} but made {made:?}"));
                        }
                        // Never FAILED for a pool that is down: Polly knows (the outage
                        // step waits for a capacity poll), so it does not try (DROPPED).
                        let expected = mb > offered || other == "OPERATION_DROPPED";
                        if !expected {
                            return Err(format!(
                                "{op} of {mb} MB (offered {offered}) ended {other}"
                            ));
                        }
                    }
                }
            }
            Step::Reserve { fw, pick } => {
                let Some(i) = self.subscribed(fw) else {
                    return Ok(());
                };
                let mounts: Vec<(Value, Value)> = self
                    .offers_of(i)
                    .into_iter()
                    .flat_map(|o| {
                        o["resources"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|r| r["disk"]["source"]["id"].is_string())
                            .map(move |r| (o.clone(), r))
                    })
                    .collect();
                if mounts.is_empty() {
                    self.note("no volume offered: skipped");
                    return Ok(());
                }
                let (offer, disk) = mounts[pick % mounts.len()].clone();
                let vol = disk["disk"]["source"]["id"].as_str().unwrap().to_string();
                let agent = offer["agent_id"]["value"].as_str().unwrap().to_string();
                let op = self.op_id();
                self.note(format!("{op}: RESERVE {vol} on {agent}"));
                let state = self
                    .accept(
                        i,
                        &offer,
                        json!({"type": "RESERVE", "id": {"value": op},
                            "reserve": {"resources": [disk]}}),
                    )
                    .await?;
                match state.as_str() {
                    "OPERATION_FINISHED" => {
                        // A framework is offered what it holds (to launch tasks with), and
                        // reserving that again changes nothing; holding another's is wrong.
                        let fw_id = self.fws[i].conn.id.clone();
                        if let Some(h) = self.m.held.get(&vol) {
                            if *h != (fw_id.clone(), agent.clone()) {
                                return Err(format!(
                                    "{op}: {vol} reserved by {fw_id} on {agent} while held by {h:?}"
                                ));
                            }
                        }
                        self.m.held.insert(vol, (fw_id, agent));
                    }
                    "OPERATION_DROPPED" => {}
                    other => {
                        return Err(format!("{op}: RESERVE of an offered volume ended {other}"))
                    }
                }
            }
            Step::Unreserve { fw, pick } | Step::DestroyDisk { fw, pick } => {
                let destroy = matches!(s, Step::DestroyDisk { .. });
                let Some(i) = self.subscribed(fw) else {
                    return Ok(());
                };
                let fw_id = self.fws[i].conn.id.clone();
                let held = self.volumes_held_by(&fw_id);
                let offers = self.offers_of(i);
                if held.is_empty() || offers.is_empty() {
                    self.note("nothing held or no offer to accept: skipped");
                    return Ok(());
                }
                let vol = held[pick % held.len()].clone();
                let offer = offers[pick % offers.len()].clone();
                // Its back-end is down and Polly knows it: the operation must not be tried.
                let service = self
                    .client
                    .inspect(&vol, None)
                    .await
                    .map_err(|e| format!("held volume {vol}: {e}"))?
                    .service;
                let down = service == "pa" && self.m.down;
                let disk = json!({"name": "disk", "type": "SCALAR", "scalar": {"value": 1.0},
                    "disk": {"source": {"type": "MOUNT", "id": vol, "vendor": "polly"}}});
                let op = self.op_id();
                let operation = if destroy {
                    self.note(format!("{op}: DESTROY_DISK {vol}"));
                    json!({"type": "DESTROY_DISK", "id": {"value": op},
                        "destroy_disk": {"source": disk}})
                } else {
                    self.note(format!("{op}: UNRESERVE {vol}"));
                    json!({"type": "UNRESERVE", "id": {"value": op},
                        "unreserve": {"resources": [disk]}})
                };
                let state = self.accept(i, &offer, operation).await?;
                if down && state != "OPERATION_DROPPED" {
                    return Err(format!(
                        "{op} on held volume {vol}, whose back-end {service} is known to be down, ended {state}; it must be DROPPED, not attempted"
                    ));
                }
                // DROPPED: nothing changed, so the volume is still held and mapped (`check`).
                match state.as_str() {
                    "OPERATION_FINISHED" => {
                        self.m.held.remove(&vol);
                        let exists = self.client.inspect(&vol, None).await.is_ok();
                        if exists == destroy {
                            return Err(format!(
                                "{op}: after {state} volume {vol} exists: {exists}"
                            ));
                        }
                    }
                    "OPERATION_DROPPED" => {}
                    other => return Err(format!("{op} on a held volume ended {other}")),
                }
            }
            Step::Decline { fw, refuse_secs } => {
                let Some(i) = self.subscribed(fw) else {
                    return Ok(());
                };
                let offers = self.offers_of(i);
                if offers.is_empty() {
                    self.note("no offer to decline: skipped");
                    return Ok(());
                }
                let fw_id = self.fws[i].conn.id.clone();
                let ids: Vec<Value> = offers.iter().map(|o| o["id"].clone()).collect();
                for o in &offers {
                    self.fws[i]
                        .offers
                        .remove(o["id"]["value"].as_str().unwrap());
                }
                self.fws[i]
                    .conn
                    .call(json!({"type": "DECLINE", "framework_id": {"value": fw_id},
                        "decline": {"offer_ids": ids, "filters": {"refuse_seconds": refuse_secs}}}))
                    .await;
                // Offers made from now on must honour the filter.
                let newest = self
                    .client
                    .offers()
                    .await
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|o| offer_number(&o.id))
                    .chain(
                        self.fws
                            .iter()
                            .flat_map(|f| f.seen.iter().map(|s| offer_number(s))),
                    )
                    .max()
                    .unwrap_or(0);
                if refuse_secs > 0.0 {
                    // A little slack for the clock reading on either side.
                    let until = Instant::now() + Duration::from_secs_f64(refuse_secs)
                        - Duration::from_millis(100);
                    for o in &offers {
                        let agent = o["agent_id"]["value"].as_str().unwrap().to_string();
                        self.fws[i].filters.push((agent, until, newest));
                    }
                }
            }
            Step::Wait { ms } => self.pump_for(ms).await?,
            Step::Outage { down } => {
                if down {
                    std::fs::write(&self.switch, b"").map_err(|e| e.to_string())?;
                } else if self.switch.exists() {
                    std::fs::remove_file(&self.switch).map_err(|e| e.to_string())?;
                }
                self.m.down = down;
                if down {
                    self.settle().await?;
                }
            }
            Step::Fill { pool, mb } => {
                let name = format!("fill-{}", self.m.fillers.len() + 1);
                let r = self
                    .client
                    .create(&polly::volumes::CreateVolume {
                        service: POOLS[pool].into(),
                        name: name.clone(),
                        size_bytes: mb << 20,
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(v) => {
                        self.note(format!("{name}: {mb} MB in {} → {}", POOLS[pool], v.id));
                        self.m.fillers.push(v.id);
                    }
                    Err(e) => self.note(format!("{name}: {mb} MB in {} refused: {e}", POOLS[pool])),
                }
                self.settle().await?;
            }
            Step::Drain { pick } => {
                if self.m.fillers.is_empty() {
                    return Ok(());
                }
                let id = self.m.fillers[pick % self.m.fillers.len()].clone();
                match self.client.delete(&id, None).await {
                    Ok(()) => {
                        self.m.fillers.retain(|f| *f != id);
                        self.note(format!("deleted filler {id}"));
                    }
                    Err(e) => self.note(format!("deleting filler {id} failed: {e}")),
                }
                self.settle().await?;
            }
        }
        Ok(())
    }

    async fn add_framework(&mut self, protobuf: bool) {
        let ct = if protobuf {
            MesosContentType::Protobuf
        } else {
            MesosContentType::Json
        };
        let conn = subscribe(&self.polly.offers, ct, None).await;
        self.note(format!("subscribed {} ({ct:?})", conn.id));
        self.fws.push(Fw {
            conn,
            offers: BTreeMap::new(),
            seen: BTreeSet::new(),
            filters: Vec::new(),
        });
    }

    /// Sizes and attached instances of the volumes on a vfs back-end, by driver id.
    fn backend(&self, service: &str) -> Result<BTreeMap<String, (u64, Vec<String>)>, String> {
        let mut out = BTreeMap::new();
        for dir in harness::vfs_volume_dirs(&self.polly.data_dir, service) {
            let Ok(bytes) = std::fs::read(dir.join("volume.json")) else {
                continue;
            };
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            let id = dir.file_name().unwrap().to_string_lossy().into_owned();
            let mut attached: Vec<String> = v["attachments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a["instance_id"].as_str().unwrap_or("").to_string())
                .collect();
            attached.sort();
            out.insert(id, (v["size_bytes"].as_u64().unwrap_or(0), attached));
        }
        Ok(out)
    }

    /// The invariants, from the admin API, the back-ends and the model.
    async fn check(&mut self) -> Result<(), String> {
        self.pump().await?;
        let e = |e: polly::client::Error| e.to_string();
        let offers = self.client.offers().await.map_err(e)?;
        let vols = self.client.volumes(false).await.map_err(e)?.volumes;
        let reservations = self.client.reservations().await.map_err(e)?;

        // Capacity: per pool, the shares of all frameworks within free − headroom.
        for service in POOLS {
            let pid = pool_id(service);
            let used_mb: u64 = self.backend(service)?.values().map(|(b, _)| b >> 20).sum();
            let budget = QUOTA_MB.saturating_sub(used_mb).saturating_sub(HEADROOM_MB);
            let mut shares: BTreeMap<&str, u64> = BTreeMap::new();
            for o in &offers {
                for d in &o.disks {
                    if let DiskOffer::Raw { pool_id, mb, .. } = d {
                        if *pool_id == pid {
                            if *mb == 0 {
                                return Err(format!("offer {} has an empty disk", o.id));
                            }
                            if service == "pa" && self.m.down {
                                return Err(format!(
                                    "offer {} carries {pid} while it is down",
                                    o.id
                                ));
                            }
                            let s = shares.entry(o.framework_id.as_str()).or_default();
                            *s = (*s).max(*mb);
                        }
                    }
                }
            }
            let total: u64 = shares.values().sum();
            if total > budget {
                return Err(format!(
                    "{pid} overcommitted: shares {shares:?} = {total} MB > {QUOTA_MB} quota − {used_mb} used − {HEADROOM_MB} headroom = {budget} MB"
                ));
            }
        }

        // Volumes in offers: one framework each, and only one it may be offered.
        let mut offered_to: BTreeMap<&str, &str> = BTreeMap::new();
        for o in &offers {
            for d in &o.disks {
                if let DiskOffer::Volume { volume_id, .. } = d {
                    if let Some(other) = offered_to.insert(volume_id, &o.framework_id) {
                        if other != o.framework_id {
                            return Err(format!(
                                "volume {volume_id} offered to {other} and {}",
                                o.framework_id
                            ));
                        }
                    }
                    let v = vols.iter().find(|v| v.id == *volume_id);
                    let reserved_by = reservations.iter().find(|r| r.volume_id == *volume_id);
                    let allowed = v
                        .is_some_and(|v| v.restrict_frameworks.contains(&o.framework_id))
                        || reserved_by.is_some_and(|r| r.framework_id == o.framework_id);
                    if !allowed || reserved_by.is_some_and(|r| r.framework_id != o.framework_id) {
                        return Err(format!(
                            "volume {volume_id} offered to {}, which may not have it",
                            o.framework_id
                        ));
                    }
                }
            }
        }

        // Attachments: at most one per volume, in the store and on the back-end.
        for v in &vols {
            if v.attachments.len() > 1 {
                return Err(format!(
                    "volume {} attached twice: {:?}",
                    v.id, v.attachments
                ));
            }
        }
        let mut backends = BTreeMap::new();
        for service in POOLS {
            let b = self.backend(service)?;
            for (id, (_, at)) in &b {
                if at.len() > 1 {
                    return Err(format!("back-end volume {service}/{id} attached to {at:?}"));
                }
            }
            backends.insert(service, b);
        }
        // The store and the back-ends agree on where each volume is attached (nothing left
        // half done by an operation that failed or was refused).
        for v in &vols {
            let (Some(driver_id), Some(b)) = (&v.driver_id, backends.get(v.service.as_str()))
            else {
                continue;
            };
            if v.status != polly::admin::VolumeStatusView::Available {
                continue;
            }
            let mut stored: Vec<String> = v
                .attachments
                .iter()
                .map(|a| a.instance_id.clone())
                .collect();
            stored.sort();
            match b.get(driver_id) {
                Some((_, at)) if *at == stored => {}
                Some((_, at)) => {
                    return Err(format!(
                    "volume {} is attached to {stored:?} in the store but to {at:?} on back-end {}",
                    v.id, v.service
                ))
                }
                None => {
                    return Err(format!(
                        "volume {} ({driver_id}) is in the store but not on back-end {}",
                        v.id, v.service
                    ))
                }
            }
        }

        // Reservations are what the finished operations made; held volumes are mapped.
        let got: BTreeSet<(String, String)> = reservations
            .iter()
            .map(|r| (r.volume_id.clone(), r.framework_id.clone()))
            .collect();
        let want: BTreeSet<(String, String)> = self
            .m
            .held
            .iter()
            .map(|(v, (f, _))| (v.clone(), f.clone()))
            .collect();
        if got != want {
            return Err(format!("reservations {got:?}, expected {want:?}"));
        }
        for (vol, (_, agent)) in &self.m.held {
            let instance = AGENTS.iter().find(|(a, _)| a == agent).unwrap().1;
            let v = vols
                .iter()
                .find(|v| v.id == *vol)
                .ok_or_else(|| format!("held volume {vol} is gone"))?;
            if v.attachments.len() != 1 || v.attachments[0].instance_id != instance {
                return Err(format!(
                    "held volume {vol} should be attached to {instance}: {:?}",
                    v.attachments
                ));
            }
        }

        // Statuses: one terminal status per operation, never a second one.
        for (key, states) in &self.m.statuses {
            let terminal = states
                .iter()
                .filter(|s| TERMINAL.contains(&s.as_str()))
                .count();
            if terminal > 1 {
                return Err(format!(
                    "operation {key:?} got {terminal} terminal statuses: {states:?}"
                ));
            }
            if !self.m.accepted.contains(key) {
                return Err(format!(
                    "status for an operation never accepted: {key:?} {states:?}"
                ));
            }
        }
        Ok(())
    }
}

async fn run_case(protobuf: Vec<bool>, steps: Vec<Step>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("pa-down");
    let polly = Polly::start_with(&dir.path().join("d"), Some(&config(&switch)), None);
    let client = polly.client();
    let mut c = Case {
        polly,
        client,
        switch,
        fws: Vec::new(),
        m: Model::default(),
        log: String::new(),
    };
    let res: Result<(), String> = async {
        for p in &protobuf {
            c.add_framework(*p).await;
        }
        c.pump_for(300).await?;
        c.check().await?;
        for (n, s) in steps.iter().enumerate() {
            let _ = writeln!(c.log, "step {n}: {s:?}");
            c.run(s).await?;
            c.check().await?;
        }
        // Let every stream deliver what is still in flight, then check once more.
        c.pump_for(500).await?;
        c.check().await?;
        for key in &c.m.accepted {
            let n = c.m.statuses.get(key).map_or(0, |v| {
                v.iter().filter(|s| TERMINAL.contains(&s.as_str())).count()
            });
            if n != 1 {
                return Err(format!("operation {key:?} got {n} terminal statuses"));
            }
        }
        Ok(())
    }
    .await;
    res.map_err(|e| format!("{e}\nwhat happened:\n{}", c.log))
}

/// Each case is a real server and real disks: 8 cases by default (CI has two cores); set
/// `PROPTEST_CASES` to explore more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    })]

    #[test]
    fn offers_never_overcommit_double_offer_or_double_attach(
        protobuf in prop::collection::vec(any::<bool>(), 1..=3),
        steps in prop::collection::vec(step(), 3..14),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let res = rt.block_on(run_case(protobuf, steps));
        prop_assert!(res.is_ok(), "{}", res.unwrap_err());
    }
}
