//! The OSB request bodies the broker reads, and their parameters, checked field by field so a
//! bad request is a 400 that names what is wrong.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::{BrokerError, Result};
use crate::volumes::parse_docker_size;

/// A request body: a JSON object (an empty body reads as `{}`).
pub fn object(body: &[u8]) -> Result<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(BrokerError::BadRequest(
            "the request body must be a JSON object".into(),
        )),
        Err(e) => Err(BrokerError::BadRequest(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// A string field: `None` when absent or null; 400 when another type or empty.
pub fn opt_str(m: &Map<String, Value>, name: &str) -> Result<Option<String>> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(BrokerError::BadRequest(format!(
            "{name} must be a non-empty string"
        ))),
        Some(_) => Err(BrokerError::BadRequest(format!("{name} must be a string"))),
    }
}

/// A required string field.
pub fn req_str(m: &Map<String, Value>, name: &str) -> Result<String> {
    opt_str(m, name)?.ok_or_else(|| BrokerError::BadRequest(format!("{name} is required")))
}

/// An object field (`context`, `parameters`, `bind_resource`): null when absent.
pub fn opt_object(m: &Map<String, Value>, name: &str) -> Result<Value> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err(BrokerError::BadRequest(format!(
            "{name} must be a JSON object"
        ))),
    }
}

/// The `service_id` and `plan_id` query parameters a DELETE must carry.
pub fn require_ids(q: &std::collections::HashMap<String, String>) -> Result<()> {
    for k in ["service_id", "plan_id"] {
        if q.get(k).is_none_or(String::is_empty) {
            return Err(BrokerError::BadRequest(format!(
                "the {k} query parameter is required"
            )));
        }
    }
    Ok(())
}

/// A provision's (or an update's) parameters: `size` and `labels`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceParams {
    pub size_bytes: Option<u64>,
    pub labels: BTreeMap<String, String>,
}

/// A size parameter: a string with a unit (`10GiB`, `512m`) or a number of GiB.
fn size_param(v: &Value) -> Result<u64> {
    let bad = |why: String| BrokerError::BadRequest(format!("parameter size: {why}"));
    match v {
        Value::String(s) => parse_docker_size(s).map_err(bad),
        Value::Number(n) => match n.as_f64() {
            Some(g) if g > 0.0 && g * ((1u64 << 30) as f64) < u64::MAX as f64 => {
                Ok((g * (1u64 << 30) as f64) as u64)
            }
            _ => Err(bad(format!("{n} is not a positive number of GiB"))),
        },
        _ => Err(bad(
            "write a size with a unit (\"10GiB\", \"512MiB\") or a number of GiB".into(),
        )),
    }
}

impl InstanceParams {
    pub fn parse(parameters: &Value) -> Result<InstanceParams> {
        let mut out = InstanceParams::default();
        let Value::Object(m) = parameters else {
            return Ok(out);
        };
        for (k, v) in m {
            match k.as_str() {
                "size" => out.size_bytes = Some(size_param(v)?),
                "labels" => {
                    let Value::Object(labels) = v else {
                        return Err(BrokerError::BadRequest(
                            "parameter labels must be an object of strings".into(),
                        ));
                    };
                    for (lk, lv) in labels {
                        let Value::String(s) = lv else {
                            return Err(BrokerError::BadRequest(format!(
                                "parameter labels.{lk} must be a string"
                            )));
                        };
                        if lk.starts_with("osb.") {
                            return Err(BrokerError::BadRequest(format!(
                                "parameter labels.{lk}: the osb. prefix is the broker's own"
                            )));
                        }
                        out.labels.insert(lk.clone(), s.clone());
                    }
                }
                other => {
                    return Err(BrokerError::BadRequest(format!(
                        "unknown parameter {other:?}; known parameters: size, labels"
                    )))
                }
            }
        }
        Ok(out)
    }
}

/// A binding's parameters: `mount` (the container path) and `readonly`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BindParams {
    pub mount: Option<String>,
    pub readonly: bool,
}

impl BindParams {
    pub fn parse(parameters: &Value) -> Result<BindParams> {
        let mut out = BindParams::default();
        let Value::Object(m) = parameters else {
            return Ok(out);
        };
        for (k, v) in m {
            match (k.as_str(), v) {
                ("mount", Value::String(p))
                    if p.starts_with('/')
                        && !p.split('/').any(|c| c == "..")
                        && !p.contains('\0') =>
                {
                    out.mount = Some(p.clone())
                }
                ("mount", v) => {
                    return Err(BrokerError::BadRequest(format!(
                    "parameter mount {v}: must be an absolute path in the container, without '..'"
                )))
                }
                ("readonly", Value::Bool(b)) => out.readonly = *b,
                ("readonly", v) => {
                    return Err(BrokerError::BadRequest(format!(
                        "parameter readonly {v}: must be true or false"
                    )))
                }
                (other, _) => {
                    return Err(BrokerError::BadRequest(format!(
                        "unknown parameter {other:?}; known parameters: mount, readonly"
                    )))
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_must_be_objects() {
        assert!(object(b"").unwrap().is_empty());
        assert!(object(b"{\"a\":1}").is_ok());
        assert!(matches!(object(b"[1]"), Err(BrokerError::BadRequest(_))));
        assert!(matches!(object(b"{nope"), Err(BrokerError::BadRequest(_))));
        let m = object(b"{\"s\":\"x\",\"n\":1,\"e\":\"\"}").unwrap();
        assert_eq!(req_str(&m, "s").unwrap(), "x");
        assert!(req_str(&m, "n").is_err());
        assert!(req_str(&m, "e").is_err());
        assert!(req_str(&m, "missing").is_err());
    }

    #[test]
    fn instance_parameters() {
        let p = InstanceParams::parse(&json!({"size": "2GiB", "labels": {"team": "a"}})).unwrap();
        assert_eq!(p.size_bytes, Some(2 << 30));
        assert_eq!(p.labels["team"], "a");
        assert_eq!(
            InstanceParams::parse(&json!({"size": 3}))
                .unwrap()
                .size_bytes,
            Some(3 << 30)
        );
        for bad in [
            json!({"size": "lots"}),
            json!({"size": -1}),
            json!({"size": true}),
            json!({"sise": "1"}),
            json!({"labels": {"a": 1}}),
            json!({"labels": {"osb.instance_id": "x"}}),
        ] {
            assert!(InstanceParams::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bind_parameters() {
        let p = BindParams::parse(&json!({"mount": "/data", "readonly": true})).unwrap();
        assert_eq!(p.mount.as_deref(), Some("/data"));
        assert!(p.readonly);
        for bad in [
            json!({"mount": "data"}),
            json!({"mount": "/a/../etc"}),
            json!({"readonly": "yes"}),
            json!({"uid": "1000"}),
        ] {
            assert!(BindParams::parse(&bad).is_err(), "{bad}");
        }
    }
}
