//! The masters' operator API (JSON): `GET_AGENTS` for the agent inventory, and
//! `GET_FRAMEWORKS` to tell whether a framework id is known, removed or unknown.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;

use super::transport::{location_master, read_limited};
use super::{Agent, MesosConfig, ERROR_BODY_LIMIT, MAX_REDIRECTS, OPERATOR_PATH};
use crate::mesos::{json, v1, Error};

/// The operator API's `GET_AGENTS` (JSON): the registered agents, and the ids of agents the
/// master recovered from its registry that have not re-registered yet.
pub async fn operator_agents(
    http: &reqwest::Client,
    master: &str,
    cfg: &MesosConfig,
) -> Result<(Vec<Agent>, std::collections::BTreeSet<String>), Error> {
    let err = |detail: String| Error::Http {
        master: master.to_string(),
        detail,
    };
    let mut req = http
        .post(format!("http://{master}{OPERATOR_PATH}"))
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .timeout(Duration::from_secs_f64(cfg.request_timeout_secs))
        .body(r#"{"type":"GET_AGENTS"}"#);
    if let Some(p) = &cfg.principal {
        req = req.basic_auth(p, cfg.secret.as_ref());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| err(format!("GET_AGENTS: {e}")))?;
    if resp.status() != StatusCode::OK {
        return Err(Error::Status {
            master: master.to_string(),
            status: resp.status().as_u16(),
            body: String::new(),
        });
    }
    let limit = usize::try_from(cfg.max_record_bytes).unwrap_or(usize::MAX);
    let body = read_limited(resp, limit.saturating_add(1))
        .await
        .map_err(|e| err(format!("GET_AGENTS body: {e}")))?;
    if body.len() > limit {
        return Err(err(format!(
            "GET_AGENTS response exceeds max_record_bytes ({limit} bytes)"
        )));
    }
    // Only each agent's `agent_info` is kept from the parse (the rest of an agent's entry,
    // its resources above all, is skipped): with 10,000 agents a whole JSON tree of the
    // answer was the largest thing Polly held.
    let v: GetAgentsResponse = serde_json::from_slice(&body).map_err(|e| Error::Json {
        message: "GET_AGENTS response".into(),
        detail: e.to_string(),
    })?;
    let listed = v.get_agents.unwrap_or_default();
    if let Some(e) = listed.agents.error {
        return Err(e);
    }
    let out = listed.agents.agents;
    let recovered = listed
        .recovered_agents
        .iter()
        .filter_map(|a| a["id"]["value"].as_str().map(str::to_string))
        .collect();
    Ok((out, recovered))
}

/// The parts of a `GET_AGENTS` answer Polly reads.
#[derive(serde::Deserialize)]
struct GetAgentsResponse {
    #[serde(default)]
    get_agents: Option<GetAgentsBody>,
}

#[derive(serde::Deserialize, Default)]
struct GetAgentsBody {
    #[serde(default)]
    agents: ConvertedAgents,
    /// `AgentInfo`s of agents the master recovered that have not re-registered.
    #[serde(default)]
    recovered_agents: Vec<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct RegisteredAgent {
    #[serde(default)]
    agent_info: serde_json::Value,
}

/// The `agents` of a `GET_AGENTS` answer, each converted as soon as it is parsed: its
/// `agent_info` lives as a JSON tree only until it is an [`Agent`] (10,000 trees at once
/// were 50 MB). The first agent that does not convert is kept as the error, and the rest
/// of the list is only skipped.
#[derive(Default)]
struct ConvertedAgents {
    agents: Vec<Agent>,
    error: Option<Error>,
}

impl<'de> serde::Deserialize<'de> for ConvertedAgents {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ConvertedAgents;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of agents")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ConvertedAgents, A::Error> {
                let mut out = ConvertedAgents::default();
                while let Some(a) = seq.next_element::<RegisteredAgent>()? {
                    if out.error.is_some() {
                        continue;
                    }
                    match json::from_value::<v1::AgentInfo>(&a.agent_info) {
                        Ok(info) => out.agents.extend(Agent::from_agent_info(&info)),
                        Err(e) => out.error = Some(e),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// What a master's operator API says about a framework id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameworkStatus {
    /// Registered (connected or within its failover timeout).
    Known,
    /// Among the completed (removed or torn down) frameworks.
    Removed,
    /// Not known to the master at all.
    Unknown,
}

/// Ask the masters' operator API (`GET_FRAMEWORKS`, JSON) about `framework_id`: `first` (the
/// master the client is subscribed to, if any) and then every configured master, following
/// 307 redirects to the leader. Fails only when no master gives an answer.
pub async fn operator_framework_status(
    http: &reqwest::Client,
    cfg: &MesosConfig,
    first: Option<&str>,
    framework_id: &str,
    timeout: Duration,
) -> Result<FrameworkStatus, Error> {
    let mut candidates: Vec<String> = first.map(str::to_string).into_iter().collect();
    candidates.extend(cfg.masters.iter().cloned());
    let mut last = None;
    let mut tried = std::collections::BTreeSet::new();
    while let Some(master) = (!candidates.is_empty()).then(|| candidates.remove(0)) {
        if !tried.insert(master.clone()) || tried.len() > cfg.masters.len() + MAX_REDIRECTS as usize
        {
            continue;
        }
        match get_frameworks(http, &master, cfg, timeout).await {
            Ok(Operator::Answer(v)) => return Ok(framework_status(&v, framework_id)),
            Ok(Operator::Redirect(to)) => candidates.insert(0, to),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Http {
        master: "-".into(),
        detail: "no Mesos master configured".into(),
    }))
}

enum Operator {
    Answer(serde_json::Value),
    Redirect(String),
}

async fn get_frameworks(
    http: &reqwest::Client,
    master: &str,
    cfg: &MesosConfig,
    timeout: Duration,
) -> Result<Operator, Error> {
    let err = |detail: String| Error::Http {
        master: master.to_string(),
        detail,
    };
    let mut req = http
        .post(format!("http://{master}{OPERATOR_PATH}"))
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .timeout(timeout)
        .body(r#"{"type":"GET_FRAMEWORKS"}"#);
    if let Some(p) = &cfg.principal {
        req = req.basic_auth(p, cfg.secret.as_ref());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| err(format!("GET_FRAMEWORKS: {e}")))?;
    let status = resp.status();
    if status == StatusCode::TEMPORARY_REDIRECT {
        return resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(location_master)
            .map(Operator::Redirect)
            .ok_or_else(|| err("307 without a usable Location".into()));
    }
    if status != StatusCode::OK {
        let text = read_limited(resp, ERROR_BODY_LIMIT)
            .await
            .unwrap_or_default();
        return Err(Error::Status {
            master: master.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&text).chars().take(200).collect(),
        });
    }
    let limit = usize::try_from(cfg.max_record_bytes).unwrap_or(usize::MAX);
    let body = read_limited(resp, limit.saturating_add(1))
        .await
        .map_err(|e| err(format!("GET_FRAMEWORKS body: {e}")))?;
    if body.len() > limit {
        return Err(err(format!(
            "GET_FRAMEWORKS response exceeds max_record_bytes ({limit} bytes)"
        )));
    }
    let v = serde_json::from_slice(&body).map_err(|e| Error::Json {
        message: "GET_FRAMEWORKS response".into(),
        detail: e.to_string(),
    })?;
    Ok(Operator::Answer(v))
}

/// Look `framework_id` up in a `GET_FRAMEWORKS` answer.
pub fn framework_status(v: &serde_json::Value, framework_id: &str) -> FrameworkStatus {
    let listed = |key: &str| {
        v["get_frameworks"][key].as_array().is_some_and(|fs| {
            fs.iter()
                .any(|f| f["framework_info"]["id"]["value"].as_str() == Some(framework_id))
        })
    };
    if listed("frameworks") {
        FrameworkStatus::Known
    } else if listed("completed_frameworks") {
        FrameworkStatus::Removed
    } else {
        FrameworkStatus::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_frameworks_answers_are_read_by_framework_id() {
        let v = serde_json::json!({"type": "GET_FRAMEWORKS", "get_frameworks": {
            "frameworks": [{"framework_info": {"id": {"value": "a"}, "user": "u", "name": "n"},
                            "active": true, "connected": true, "recovered": false}],
            "completed_frameworks": [{"framework_info": {"id": {"value": "b"}, "user": "u",
                                      "name": "n"}, "active": false, "connected": false,
                                      "recovered": false}]}});
        assert_eq!(framework_status(&v, "a"), FrameworkStatus::Known);
        assert_eq!(framework_status(&v, "b"), FrameworkStatus::Removed);
        assert_eq!(framework_status(&v, "c"), FrameworkStatus::Unknown);
        assert_eq!(
            framework_status(&serde_json::json!({}), "a"),
            FrameworkStatus::Unknown
        );
    }
}
