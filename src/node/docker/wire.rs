//! The Docker legacy volume plugin protocol's JSON, field for field: requests Docker POSTs
//! to `/VolumeDriver.*` and what it expects back. An empty `Err` means success.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The content type Docker sends and expects.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// `Create`: a name and `-o` options.
#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Opts", default)]
    pub opts: Option<BTreeMap<String, String>>,
}

/// `Remove`, `Path`, `Get`: a name.
#[derive(Debug, Deserialize)]
pub struct NameRequest {
    #[serde(rename = "Name")]
    pub name: String,
}

/// `Mount`, `Unmount`: a name and the caller's mount id (one per container).
#[derive(Debug, Deserialize)]
pub struct MountRequest {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "ID", default)]
    pub id: String,
}

#[derive(Debug, Serialize)]
pub struct ErrResponse {
    #[serde(rename = "Err")]
    pub err: String,
}

#[derive(Debug, Serialize)]
pub struct MountResponse {
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
    #[serde(rename = "Err")]
    pub err: String,
}

#[derive(Debug, Serialize)]
pub struct Volume {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Mountpoint", skip_serializing_if = "String::is_empty")]
    pub mountpoint: String,
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
    pub status: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Serialize)]
pub struct GetResponse {
    #[serde(rename = "Volume")]
    pub volume: Option<Volume>,
    #[serde(rename = "Err")]
    pub err: String,
}

#[derive(Debug, Serialize)]
pub struct ListResponse {
    #[serde(rename = "Volumes")]
    pub volumes: Vec<Volume>,
    #[serde(rename = "Err")]
    pub err: String,
}

#[derive(Debug, Serialize)]
pub struct Capabilities {
    #[serde(rename = "Scope")]
    pub scope: &'static str,
}

#[derive(Debug, Serialize)]
pub struct CapabilitiesResponse {
    #[serde(rename = "Capabilities")]
    pub capabilities: Capabilities,
}

#[derive(Debug, Serialize)]
pub struct ActivateResponse {
    #[serde(rename = "Implements")]
    pub implements: Vec<&'static str>,
}
