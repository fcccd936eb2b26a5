//! Services as a client names them (`/services...`), and the instance a client reports for
//! a service, recorded as it is seen.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;

use super::headers::{instance_for, InstanceId};
use super::types::{DriverInfo, WireInstance, WireInstanceId, WireServiceInfo};
use super::{flags, json, Client, ClientHeaders, LsError, LsState};

/// A service the client names, with its driver kind.
pub(super) struct Svc {
    pub(super) name: String,
    pub(super) driver: String,
}

impl LsState {
    pub(super) fn svc(&self, name: &str) -> Result<Svc, LsError> {
        let s = self
            .manager
            .service(name)
            .map_err(|_| LsError::not_found(name))?;
        Ok(Svc {
            name: s.name.clone(),
            driver: s.driver.kind().to_string(),
        })
    }

    pub(super) fn all_svcs(&self) -> Vec<Svc> {
        self.manager
            .services()
            .map(|s| Svc {
                name: s.name.clone(),
                driver: s.driver.kind().to_string(),
            })
            .collect()
    }

    /// Record the instance a client reported (its id, and the hostname when the metadata
    /// carries one), keeping what earlier reports told when this one says less.
    async fn record(&self, driver: &str, iid: &InstanceId) -> Result<(), LsError> {
        let Some(id) = iid.resolved_id() else {
            return Ok(());
        };
        let known = self.manager.store().instance(driver, id)?;
        let hostname = iid
            .hostname()
            .map(str::to_string)
            .or_else(|| known.as_ref().and_then(|k| k.hostname.clone()));
        let fields = if iid.fields.is_empty() {
            known.map(|k| k.fields).unwrap_or_default()
        } else {
            iid.fields.clone()
        };
        self.manager
            .record_instance(driver, id, hostname, fields)
            .await?;
        Ok(())
    }

    /// The instance id the client gave for `svc`, recorded; `required` turns its absence
    /// into the reference's 400.
    pub(super) async fn instance<'a>(
        &self,
        client: &'a ClientHeaders,
        svc: &Svc,
        required: bool,
    ) -> Result<Option<&'a InstanceId>, LsError> {
        match instance_for(&client.iids, &svc.name, &svc.driver) {
            Some(iid) => {
                self.record(&svc.driver, iid).await?;
                if required && iid.resolved_id().is_none() {
                    return Err(LsError::missing_instance_id(&svc.name));
                }
                Ok(Some(iid))
            }
            None if required => Err(LsError::missing_instance_id(&svc.name)),
            None => Ok(None),
        }
    }
}

async fn service_info(
    st: &LsState,
    client: &ClientHeaders,
    svc: &Svc,
    with_instance: bool,
) -> Result<WireServiceInfo, LsError> {
    let instance = if with_instance {
        let iid = st
            .instance(client, svc, true)
            .await?
            .ok_or_else(|| LsError::missing_instance_id(&svc.name))?;
        Some(WireInstance {
            instance_id: WireInstanceId {
                id: iid.resolved_id().unwrap_or_default().to_string(),
                ..WireInstanceId::from(iid)
            },
            name: format!("{}Instance", svc.driver),
            provider_name: String::new(),
        })
    } else {
        None
    };
    Ok(WireServiceInfo {
        name: svc.name.clone(),
        instance,
        driver: DriverInfo::for_kind(&svc.driver),
    })
}

pub(super) async fn services_all(
    State(st): State<LsState>,
    Extension(client): Client,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let with_instance = flags(&q).contains_key("instance");
    let mut out = BTreeMap::new();
    for svc in st.all_svcs() {
        out.insert(
            svc.name.clone(),
            service_info(&st, &client, &svc, with_instance).await?,
        );
    }
    Ok(json(StatusCode::OK, &out))
}

pub(super) async fn service_one(
    State(st): State<LsState>,
    Extension(client): Client,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let with_instance = flags(&q).contains_key("instance");
    Ok(json(
        StatusCode::OK,
        &service_info(&st, &client, &svc, with_instance).await?,
    ))
}
