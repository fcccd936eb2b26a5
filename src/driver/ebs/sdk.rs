//! `Ec2Api` over the AWS SDK for Rust (cargo feature `ebs`): request building and response
//! mapping only, no decisions. Credentials and region come from the standard AWS chain
//! (environment, shared config and credentials files, web identity, ECS and instance
//! metadata); the region and the endpoint (moto, a VPC endpoint) can be set in config. HTTPS
//! is rustls with ring, like the rest of Polly.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::types::{self as ec2, ResourceType, TagSpecification};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::model::{
    ApiError, ApiResult, AttachState, CreateVolumeInput, Ec2Api, Ec2Attachment, Ec2BlockDevice,
    Ec2Instance, Ec2Snapshot, Ec2Volume, Filter, Page, Query, VolumeState,
};

/// The SDK client, built on first use (loading the credential chain is async, the driver
/// registry is not).
pub struct SdkEc2 {
    region: Option<String>,
    endpoint: Option<String>,
    client: tokio::sync::OnceCell<aws_sdk_ec2::Client>,
}

impl SdkEc2 {
    pub fn new(region: Option<String>, endpoint: Option<String>) -> SdkEc2 {
        SdkEc2 {
            region,
            endpoint,
            client: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> &aws_sdk_ec2::Client {
        self.client
            .get_or_init(|| async {
                let conf = sdk_config(self.region.clone(), self.endpoint.clone()).await;
                aws_sdk_ec2::Client::new(&conf)
            })
            .await
    }
}

/// The SDK configuration Polly uses: the standard credential and region chain, with the
/// configured region and endpoint on top, and an HTTPS client on rustls with ring.
pub async fn sdk_config(region: Option<String>, endpoint: Option<String>) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

/// An SDK failure as an `ApiError`: EC2's code when EC2 answered, `Transport` otherwise.
fn sdk_err<E, R>(e: aws_sdk_ec2::error::SdkError<E, R>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.code() {
        Some(code) => ApiError::new(code, e.message().unwrap_or_default()),
        None => ApiError::transport(DisplayErrorContext(&e).to_string()),
    }
}

fn filters(fs: &[Filter]) -> Option<Vec<ec2::Filter>> {
    (!fs.is_empty()).then(|| {
        fs.iter()
            .map(|f| {
                ec2::Filter::builder()
                    .name(&f.name)
                    .set_values(Some(f.values.clone()))
                    .build()
            })
            .collect()
    })
}

fn ids(q: &Query) -> Option<Vec<String>> {
    (!q.ids.is_empty()).then(|| q.ids.clone())
}

fn max_results(q: &Query) -> Option<i32> {
    q.max_results.map(|m| i32::try_from(m).unwrap_or(i32::MAX))
}

fn tags_of(tags: &[ec2::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn tag_spec(kind: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| ec2::Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

fn gib(size: Option<i32>) -> u64 {
    size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0)
}

fn attachment(a: &ec2::VolumeAttachment) -> Ec2Attachment {
    Ec2Attachment {
        volume_id: a.volume_id().unwrap_or_default().to_string(),
        instance_id: a.instance_id().unwrap_or_default().to_string(),
        device: a.device().unwrap_or_default().to_string(),
        state: AttachState::parse(a.state().map(|s| s.as_str()).unwrap_or("detached")),
    }
}

fn volume(v: &ec2::Volume) -> Ec2Volume {
    Ec2Volume {
        id: v.volume_id().unwrap_or_default().to_string(),
        zone: v.availability_zone().unwrap_or_default().to_string(),
        size_gib: gib(v.size()),
        volume_type: v
            .volume_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        iops: v.iops().and_then(|i| u32::try_from(i).ok()),
        multi_attach: v.multi_attach_enabled().unwrap_or(false),
        state: VolumeState::parse(v.state().map(|s| s.as_str()).unwrap_or("error")),
        attachments: v.attachments().iter().map(attachment).collect(),
        tags: tags_of(v.tags()),
        snapshot_id: v
            .snapshot_id()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    }
}

fn snapshot(s: &ec2::Snapshot) -> Ec2Snapshot {
    Ec2Snapshot {
        id: s.snapshot_id().unwrap_or_default().to_string(),
        volume_id: s.volume_id().unwrap_or_default().to_string(),
        size_gib: gib(s.volume_size()),
        state: s
            .state()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
        start_time: s
            .start_time()
            .and_then(|t| u64::try_from(t.secs()).ok())
            .unwrap_or(0),
        tags: tags_of(s.tags()),
    }
}

fn instance(i: &ec2::Instance) -> Ec2Instance {
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    Ec2Instance {
        id: i.instance_id().unwrap_or_default().to_string(),
        zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        private_dns: nonempty(i.private_dns_name()),
        private_ip: nonempty(i.private_ip_address()),
        public_dns: nonempty(i.public_dns_name()),
        public_ip: nonempty(i.public_ip_address()),
        block_devices: i
            .block_device_mappings()
            .iter()
            .map(|b| Ec2BlockDevice {
                device: b.device_name().unwrap_or_default().to_string(),
                volume_id: b
                    .ebs()
                    .and_then(|e| e.volume_id())
                    .unwrap_or_default()
                    .to_string(),
            })
            .collect(),
        tags: tags_of(i.tags()),
    }
}

#[async_trait]
impl Ec2Api for SdkEc2 {
    async fn describe_instances(&self, q: &Query) -> ApiResult<Page<Ec2Instance>> {
        let out = self
            .client()
            .await
            .describe_instances()
            .set_instance_ids(ids(q))
            .set_filters(filters(&q.filters))
            .set_max_results(max_results(q))
            .set_next_token(q.next_token.clone())
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(Page {
            items: out
                .reservations()
                .iter()
                .flat_map(|r| r.instances().iter().map(instance))
                .collect(),
            next_token: out.next_token().map(str::to_string),
        })
    }

    async fn create_volume(&self, input: &CreateVolumeInput) -> ApiResult<Ec2Volume> {
        let size = input.size_gib.map(|s| i32::try_from(s).unwrap_or(i32::MAX));
        let iops = input.iops.map(|i| i32::try_from(i).unwrap_or(i32::MAX));
        let mut call = self
            .client()
            .await
            .create_volume()
            .availability_zone(&input.zone)
            .set_size(size)
            .volume_type(ec2::VolumeType::from(input.volume_type.as_str()))
            .set_iops(iops)
            .set_snapshot_id(input.snapshot_id.clone())
            .set_client_token(input.client_token.clone());
        if input.multi_attach {
            call = call.multi_attach_enabled(true);
        }
        if !input.tags.is_empty() {
            call = call.tag_specifications(tag_spec(ResourceType::Volume, &input.tags));
        }
        let v = call.send().await.map_err(sdk_err)?;
        Ok(Ec2Volume {
            id: v.volume_id().unwrap_or_default().to_string(),
            zone: v.availability_zone().unwrap_or_default().to_string(),
            size_gib: gib(v.size()),
            volume_type: v
                .volume_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            iops: v.iops().and_then(|i| u32::try_from(i).ok()),
            multi_attach: v.multi_attach_enabled().unwrap_or(false),
            state: VolumeState::parse(v.state().map(|s| s.as_str()).unwrap_or("creating")),
            attachments: v.attachments().iter().map(attachment).collect(),
            tags: tags_of(v.tags()),
            snapshot_id: v
                .snapshot_id()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    async fn describe_volumes(&self, q: &Query) -> ApiResult<Page<Ec2Volume>> {
        let out = self
            .client()
            .await
            .describe_volumes()
            .set_volume_ids(ids(q))
            .set_filters(filters(&q.filters))
            .set_max_results(max_results(q))
            .set_next_token(q.next_token.clone())
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(Page {
            items: out.volumes().iter().map(volume).collect(),
            next_token: out.next_token().map(str::to_string),
        })
    }

    async fn delete_volume(&self, volume_id: &str) -> ApiResult<()> {
        self.client()
            .await
            .delete_volume()
            .volume_id(volume_id)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn attach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> ApiResult<Ec2Attachment> {
        let a = self
            .client()
            .await
            .attach_volume()
            .volume_id(volume_id)
            .instance_id(instance_id)
            .device(device)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(Ec2Attachment {
            volume_id: volume_id.to_string(),
            instance_id: instance_id.to_string(),
            device: a.device().unwrap_or(device).to_string(),
            state: AttachState::parse(a.state().map(|s| s.as_str()).unwrap_or("attaching")),
        })
    }

    async fn detach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        force: bool,
    ) -> ApiResult<Ec2Attachment> {
        let a = self
            .client()
            .await
            .detach_volume()
            .volume_id(volume_id)
            .instance_id(instance_id)
            .force(force)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(Ec2Attachment {
            volume_id: volume_id.to_string(),
            instance_id: instance_id.to_string(),
            device: a.device().unwrap_or_default().to_string(),
            state: AttachState::parse(a.state().map(|s| s.as_str()).unwrap_or("detaching")),
        })
    }

    async fn modify_volume(&self, volume_id: &str, size_gib: u64) -> ApiResult<()> {
        self.client()
            .await
            .modify_volume()
            .volume_id(volume_id)
            .size(i32::try_from(size_gib).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn create_snapshot(
        &self,
        volume_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> ApiResult<Ec2Snapshot> {
        let s = self
            .client()
            .await
            .create_snapshot()
            .volume_id(volume_id)
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(Ec2Snapshot {
            id: s.snapshot_id().unwrap_or_default().to_string(),
            volume_id: s.volume_id().unwrap_or(volume_id).to_string(),
            size_gib: gib(s.volume_size()),
            state: s
                .state()
                .map(|x| x.as_str().to_string())
                .unwrap_or_default(),
            start_time: s
                .start_time()
                .and_then(|t| u64::try_from(t.secs()).ok())
                .unwrap_or(0),
            tags: tags_of(s.tags()),
        })
    }

    async fn describe_snapshots(&self, q: &Query) -> ApiResult<Page<Ec2Snapshot>> {
        let out = self
            .client()
            .await
            .describe_snapshots()
            .owner_ids("self")
            .set_snapshot_ids(ids(q))
            .set_filters(filters(&q.filters))
            .set_max_results(max_results(q))
            .set_next_token(q.next_token.clone())
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(Page {
            items: out.snapshots().iter().map(snapshot).collect(),
            next_token: out.next_token().map(str::to_string),
        })
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> ApiResult<()> {
        self.client()
            .await
            .delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }
}
