//! `polly volume ...`: list, inspect, create, delete, attach, detach, restrict and label
//! volumes. Commands that change a volume print it as it is afterwards.

use std::collections::BTreeMap;

use anyhow::Context;

use super::output::{print_json, set, table};
use super::{CreateArgs, VolumeCmd};
use crate::admin::{VolumeStatusView, VolumeView};
use crate::client::{human_size, parse_size, AdminClient};
use crate::driver::AccessMode;
use crate::volumes::{CreateVolume, Restriction};

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

pub(super) async fn run(client: &AdminClient, json: bool, cmd: VolumeCmd) -> anyhow::Result<()> {
    let v = match cmd {
        VolumeCmd::Ls { all } => return ls(client, json, all).await,
        VolumeCmd::Inspect(t) => {
            let v = client.inspect(&t.volume, t.in_service.as_deref()).await?;
            // Inspect shows every field: JSON is the readable form of one record.
            return print_json(&v);
        }
        VolumeCmd::Create(a) => client.create(&create_request(a)?).await?,
        VolumeCmd::Rm(t) => {
            client.delete(&t.volume, t.in_service.as_deref()).await?;
            if json {
                return print_json(&serde_json::json!({"deleted": t.volume}));
            }
            println!("deleted {}", t.volume);
            return Ok(());
        }
        VolumeCmd::Attach {
            target: t,
            instance,
            device,
        } => {
            client
                .attach(&t.volume, t.in_service.as_deref(), &instance, device)
                .await?
        }
        VolumeCmd::Detach {
            target: t,
            instance,
            force,
        } => {
            client
                .detach(&t.volume, t.in_service.as_deref(), instance, force)
                .await?
        }
        VolumeCmd::Restrict {
            target: t,
            services,
            frameworks,
        } => {
            let r = restriction(services, frameworks);
            client
                .restrict(&t.volume, t.in_service.as_deref(), &r)
                .await?
        }
        VolumeCmd::Unrestrict {
            target: t,
            services,
            frameworks,
        } => {
            let r = restriction(services, frameworks);
            client
                .unrestrict(&t.volume, t.in_service.as_deref(), &r)
                .await?
        }
        VolumeCmd::Label { target: t, labels } => {
            let labels = parse_labels(&labels)?;
            client
                .label(&t.volume, t.in_service.as_deref(), labels)
                .await?
        }
        VolumeCmd::Unlabel { target: t, keys } => {
            client
                .unlabel(&t.volume, t.in_service.as_deref(), keys)
                .await?
        }
    };
    show_volume(json, &v)
}

async fn ls(client: &AdminClient, json: bool, all: bool) -> anyhow::Result<()> {
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
    Ok(())
}

/// The admin API's create request for `polly volume create`; refuses a bad size, access
/// mode or label before anything is sent.
fn create_request(a: CreateArgs) -> anyhow::Result<CreateVolume> {
    Ok(CreateVolume {
        service: a.service,
        name: a.name,
        size_bytes: parse_size(&a.size)?,
        pool: a.pool,
        zone: a.zone,
        access_mode: access_mode(&a.access_mode)?,
        labels: parse_labels(&a.labels)?,
        restrict_services: a.restrict_services.into_iter().collect(),
        restrict_frameworks: a.restrict_frameworks.into_iter().collect(),
        fields: BTreeMap::new(),
    })
}

fn restriction(services: Vec<String>, frameworks: Vec<String>) -> Restriction {
    Restriction {
        services: services.into_iter().collect(),
        frameworks: frameworks.into_iter().collect(),
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

/// The STATUS column: the lifecycle state, except that an available volume with an
/// attachment reads `attached`, as REX-Ray users expect.
fn display_status(v: &VolumeView) -> String {
    match v.status {
        VolumeStatusView::Available if !v.attachments.is_empty() => "attached".into(),
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

fn show_volume(json: bool, v: &VolumeView) -> anyhow::Result<()> {
    if json {
        return print_json(v);
    }
    table(&VOLUME_HEADERS, volume_rows(std::slice::from_ref(v)));
    Ok(())
}
