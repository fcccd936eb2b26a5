//! A typed client of the admin API, used by the `polly` CLI and by tests.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin::{
    AttachBody, DetachBody, EraseBody, ErrorBody, InstanceView, IntentView, LabelBody, NodeView,
    ReportBody, ReservationView, SourceView, UnlabelBody, VersionInfo, VolumeList, VolumeView,
};
use crate::store::Dump;
use crate::volumes::{CreateVolume, ReconcileReport, Restriction, ServiceInfo};

mod size;
pub use size::{human_size, parse_size, SizeError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach polly at {url}: {source}; is `polly serve` running?")]
    Connect { url: String, source: reqwest::Error },
    /// The server answered with an error body.
    #[error("{message} (HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected response from polly: {0}")]
    Decode(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Admin API client.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl AdminClient {
    pub fn new(base: &str, token: Option<String>) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        }
    }

    /// A client whose every call (connect included) gives up after `timeout`: what a node
    /// agent uses, so a hung central cannot hang a `docker run`.
    pub fn with_timeout(base: &str, token: Option<String>, timeout: Duration) -> AdminClient {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .unwrap_or_default();
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, T)> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|source| Error::Connect {
            url: self.base.clone(),
            source,
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Decode(e.to_string()))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => Error::Api {
                    status: status.as_u16(),
                    code: e.error,
                    message: e.message,
                },
                Err(_) => Error::Api {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                },
            });
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        let v = serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))?;
        Ok((status, v))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.send::<(), T>(Method::GET, path, None).await?.1)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        Ok(self.send(Method::POST, path, Some(body)).await?.1)
    }

    fn vol_path(id: &str, service: Option<&str>, suffix: &str) -> String {
        let q = service
            .map(|s| format!("?service={}", enc(s)))
            .unwrap_or_default();
        format!("/admin/volumes/{}{suffix}{q}", enc(id))
    }

    pub async fn version(&self) -> Result<VersionInfo> {
        self.get("/admin/version").await
    }

    pub async fn volumes(&self, all: bool) -> Result<VolumeList> {
        self.get(if all {
            "/admin/volumes?all=true"
        } else {
            "/admin/volumes"
        })
        .await
    }

    pub async fn create(&self, req: &CreateVolume) -> Result<VolumeView> {
        self.post("/admin/volumes", req).await
    }

    pub async fn inspect(&self, id: &str, service: Option<&str>) -> Result<VolumeView> {
        self.get(&Self::vol_path(id, service, "")).await
    }

    pub async fn delete(&self, id: &str, service: Option<&str>) -> Result<()> {
        let _: serde_json::Value = self
            .send::<(), _>(Method::DELETE, &Self::vol_path(id, service, ""), None)
            .await?
            .1;
        Ok(())
    }

    pub async fn attach(
        &self,
        id: &str,
        service: Option<&str>,
        instance_id: &str,
        device: Option<String>,
    ) -> Result<VolumeView> {
        let b = AttachBody {
            instance_id: instance_id.to_string(),
            device,
        };
        self.post(&Self::vol_path(id, service, "/attach"), &b).await
    }

    pub async fn detach(
        &self,
        id: &str,
        service: Option<&str>,
        instance_id: Option<String>,
        force: bool,
    ) -> Result<VolumeView> {
        let b = DetachBody { instance_id, force };
        self.post(&Self::vol_path(id, service, "/detach"), &b).await
    }

    /// What `instance_id`, which holds the volume, mounts.
    pub async fn source(&self, id: &str, instance_id: &str) -> Result<SourceView> {
        let path = format!(
            "/admin/volumes/{}/source?instance_id={}",
            enc(id),
            enc(instance_id)
        );
        self.get(&path).await
    }

    /// A node agent's report of itself (instance id, hostname, zone).
    pub async fn report(&self, report: &ReportBody) -> Result<()> {
        let _: serde_json::Value = self.post("/admin/instances", report).await?;
        Ok(())
    }

    pub async fn restrict(
        &self,
        id: &str,
        service: Option<&str>,
        r: &Restriction,
    ) -> Result<VolumeView> {
        self.post(&Self::vol_path(id, service, "/restrict"), r)
            .await
    }

    pub async fn unrestrict(
        &self,
        id: &str,
        service: Option<&str>,
        r: &Restriction,
    ) -> Result<VolumeView> {
        self.post(&Self::vol_path(id, service, "/unrestrict"), r)
            .await
    }

    pub async fn label(
        &self,
        id: &str,
        service: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeView> {
        self.post(
            &Self::vol_path(id, service, "/label"),
            &LabelBody { labels },
        )
        .await
    }

    pub async fn unlabel(
        &self,
        id: &str,
        service: Option<&str>,
        keys: Vec<String>,
    ) -> Result<VolumeView> {
        self.post(
            &Self::vol_path(id, service, "/unlabel"),
            &UnlabelBody { keys },
        )
        .await
    }

    pub async fn services(&self) -> Result<Vec<ServiceInfo>> {
        self.get("/admin/services").await
    }

    pub async fn instances(&self) -> Result<Vec<InstanceView>> {
        self.get("/admin/instances").await
    }

    pub async fn agents(&self) -> Result<Vec<crate::mesos::client::Agent>> {
        self.get("/admin/agents").await
    }

    /// Fences a node (asserts it is off): its attachments are released.
    pub async fn fence(&self, id: &str) -> Result<NodeView> {
        let path = format!("/admin/agents/{}/fence", enc(id));
        self.post(&path, &crate::admin::FenceBody {}).await
    }

    /// The periodic reconciler's last pass (`None` before the first).
    pub async fn reconciler(&self) -> Result<Option<crate::volumes::ReconcilerStatus>> {
        self.get("/admin/reconciler").await
    }

    pub async fn frameworks(&self) -> Result<Vec<crate::offer_endpoint::FrameworkView>> {
        self.get("/admin/frameworks").await
    }

    pub async fn offers(&self) -> Result<Vec<crate::offer_endpoint::OfferView>> {
        self.get("/admin/offers").await
    }

    pub async fn reservations(&self) -> Result<Vec<ReservationView>> {
        self.get("/admin/reservations").await
    }

    /// Release a framework's reservations (all, or one volume's).
    pub async fn release_reservations(
        &self,
        framework_id: &str,
        volume_id: Option<&str>,
        force: bool,
    ) -> Result<crate::offer_endpoint::ReleaseReport> {
        self.post(
            &format!("/admin/frameworks/{}/release", enc(framework_id)),
            &crate::admin::ReleaseBody {
                volume_id: volume_id.map(str::to_string),
                force,
            },
        )
        .await
    }

    pub async fn mesos(&self) -> Result<crate::mesos::client::MesosStatus> {
        self.get("/admin/mesos").await
    }

    pub async fn orphans(&self) -> Result<ReconcileReport> {
        self.get("/admin/orphans").await
    }

    /// Creates the store record for an orphan.
    pub async fn adopt_orphan(
        &self,
        service: &str,
        driver_id: &str,
        name: Option<String>,
    ) -> Result<VolumeView> {
        let path = format!("/admin/orphans/{}/{}/adopt", enc(service), enc(driver_id));
        self.post(&path, &crate::admin::AdoptBody { name }).await
    }

    /// Deletes an orphan from its back-end.
    pub async fn remove_orphan(&self, service: &str, driver_id: &str) -> Result<()> {
        let path = format!("/admin/orphans/{}/{}", enc(service), enc(driver_id));
        let _: serde_json::Value = self.send::<(), _>(Method::DELETE, &path, None).await?.1;
        Ok(())
    }

    pub async fn operations(&self) -> Result<Vec<IntentView>> {
        self.get("/admin/operations").await
    }

    /// Every record in the store's own format (its backup format), not the admin views.
    pub async fn dump(&self) -> Result<Dump> {
        self.get("/admin/store/dump").await
    }

    pub async fn erase(&self) -> Result<()> {
        let _: serde_json::Value = self
            .post("/admin/store/erase", &EraseBody { confirm: true })
            .await?;
        Ok(())
    }
}
