//! A framework of the offer load benchmarks (`offer_ops`, `soak`): its connection (the test
//! framework of `tests/harness/fakes/framework.rs`), the offers it holds as its stream tells
//! (OFFERS add, RESCIND removes), the operation statuses not yet read, and what on the stream
//! broke the protocol. The including bench declares `mod harness` (`tests/harness/mod.rs`)
//! and imports `harness::fakes::framework` at its root first.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

use crate::framework::Framework;

pub struct OfferBook {
    pub fw: Framework,
    /// Outstanding offers with a RAW disk or a volume, oldest first.
    pub offers: Vec<Value>,
    /// Operation statuses received and not yet taken.
    pub statuses: Vec<Value>,
    /// Protocol violations seen on the stream (offers for another framework, ERROR events,
    /// events of unknown types).
    pub violations: Vec<String>,
}

impl OfferBook {
    pub fn new(fw: Framework) -> Self {
        OfferBook {
            fw,
            offers: Vec::new(),
            statuses: Vec::new(),
            violations: Vec::new(),
        }
    }

    fn apply(&mut self, ev: Value) {
        match ev["type"].as_str() {
            Some("OFFERS") => {
                for o in ev["offers"]["offers"].as_array().into_iter().flatten() {
                    if o["framework_id"]["value"] != self.fw.id.as_str() {
                        self.violations
                            .push(format!("offer for another framework: {o}"));
                        continue;
                    }
                    let disk = o["resources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|r| r["disk"]["source"]["type"] == "RAW");
                    if disk {
                        self.offers.push(o.clone());
                    }
                }
            }
            Some("RESCIND") => {
                let gone = &ev["rescind"]["offer_id"];
                self.offers.retain(|o| o["id"] != *gone);
            }
            Some("UPDATE_OPERATION_STATUS") => self
                .statuses
                .push(ev["update_operation_status"]["status"].clone()),
            Some("HEARTBEAT") | Some("SUBSCRIBED") => {}
            _ => self.violations.push(format!("unexpected event: {ev}")),
        }
    }

    /// Apply every event already received.
    pub fn drain(&mut self) {
        while let Some(ev) = self.fw.skipped.pop_front() {
            self.apply(ev);
        }
        while let Ok(ev) = self.fw.events.try_recv() {
            self.apply(ev);
        }
    }

    /// Wait up to `within` for the next event and apply it; an error when none came (the
    /// stream's heartbeats stopped) or the stream ended.
    pub async fn recv(&mut self, within: Duration) -> Result<(), String> {
        match tokio::time::timeout(within, self.fw.events.recv()).await {
            Ok(Some(ev)) => {
                self.apply(ev);
                Ok(())
            }
            Ok(None) => Err(format!("framework {}: event stream ended", self.fw.id)),
            Err(_) => Err(format!(
                "framework {}: no event (not even a heartbeat) within {within:?}",
                self.fw.id
            )),
        }
    }

    /// The newest outstanding offer, taken out of the outstanding set; each wait for an event
    /// may last `within`.
    pub async fn take_offer(&mut self, within: Duration) -> Result<Value, String> {
        loop {
            self.drain();
            if let Some(o) = self.offers.pop() {
                return Ok(o);
            }
            self.recv(within).await?;
        }
    }

    /// The terminal status of operation `op`; each wait for an event may last `within`.
    pub async fn terminal(&mut self, op: &str, within: Duration) -> Result<Value, String> {
        loop {
            self.drain();
            if let Some(i) = self
                .statuses
                .iter()
                .position(|s| s["operation_id"]["value"] == op && s["state"] != "OPERATION_PENDING")
            {
                return Ok(self.statuses.swap_remove(i));
            }
            self.recv(within).await?;
        }
    }
}

/// An ACCEPT of `offer`: CREATE_DISK of `mb` MB from its RAW disk.
pub fn create_disk_call(fw: &str, offer: &Value, op: &str, mb: f64) -> Value {
    let raw = offer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["disk"]["source"]["type"] == "RAW")
        .unwrap();
    let mut source = raw.clone();
    source["scalar"]["value"] = json!(mb);
    json!({"type": "ACCEPT", "framework_id": {"value": fw},
        "accept": {"offer_ids": [offer["id"].clone()],
            "operations": [{"type": "CREATE_DISK", "id": {"value": op},
                "create_disk": {"source": source, "target_type": "MOUNT"}}],
            "filters": {"refuse_seconds": 0}}})
}
