//! A Mesos v1 scheduler connection for a framework that consumes offers, from a master or
//! from Polly's own storage-offer endpoint: SUBSCRIBE (following a leader redirect), read the
//! event stream, and send calls (ACCEPT with operations, DECLINE, ACKNOWLEDGE_OPERATION_STATUS,
//! RECONCILE_OPERATIONS, TEARDOWN, …). One attempt, no reconnect loop: that is the caller's
//! policy ([`super::Client`] is Polly's own reconnecting framework). The example consumer
//! framework (`examples/consumer.rs`) is built on it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::config::MesosContentType;
use super::{
    decode_event, encode_call, open_subscription, post_call, Credentials, Opened, MAX_REDIRECTS,
};
use crate::mesos::recordio::Decoder;
use crate::mesos::v1::scheduler::{call, event, Call, Event};
use crate::mesos::v1::{self, offer, resource, FrameworkId, FrameworkInfo};
use crate::mesos::Error;

/// How to talk to the master.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Encoding of calls and events.
    pub content_type: MesosContentType,
    /// HTTP Basic credentials (`principal`, `secret`), sent with every request when set.
    pub principal: Option<String>,
    pub secret: Option<String>,
    /// Bound on the SUBSCRIBE response (headers and the SUBSCRIBED event) and on each call.
    pub request_timeout: Duration,
    /// Largest RecordIO record accepted on the event stream.
    pub max_record_bytes: u64,
    /// The stream counts as dead after this many heartbeat intervals without any event.
    pub missed_heartbeats: u32,
}

impl Default for SubscribeOptions {
    fn default() -> SubscribeOptions {
        SubscribeOptions {
            content_type: MesosContentType::Json,
            principal: None,
            secret: None,
            request_timeout: Duration::from_secs(30),
            max_record_bytes: 64 << 20,
            missed_heartbeats: 5,
        }
    }
}

/// Sends calls on one subscription. Cheap to clone, so calls can go out while another task
/// reads the events.
#[derive(Clone)]
pub struct Caller {
    http: reqwest::Client,
    master: String,
    framework_id: String,
    stream_id: String,
    opts: Arc<SubscribeOptions>,
}

/// One subscription: the framework id the master gave, the event stream and a [`Caller`].
pub struct Subscription {
    caller: Caller,
    heartbeat_interval: Duration,
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    decoder: Decoder,
    /// Events decoded from a chunk but not yet returned.
    ready: VecDeque<Event>,
}

impl Subscription {
    /// SUBSCRIBE to `master` (`host:port`) with `info` (its `id` set re-subscribes as that
    /// framework) and wait for SUBSCRIBED. A 307 to the leading master is followed; any other
    /// refusal, and an ERROR event instead of SUBSCRIBED, is an error.
    pub async fn subscribe(
        master: &str,
        info: FrameworkInfo,
        opts: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(opts.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::Http {
                master: master.to_string(),
                detail: format!("cannot build HTTP client: {e}"),
            })?;
        let c = Call {
            framework_id: info.id.clone(),
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                framework_info: info,
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = encode_call(opts.content_type, &c)?;
        let mut master = master.to_string();
        let mut redirects = 0;
        let (resp, stream_id) = loop {
            let credentials = opts.principal.as_deref().map(|principal| Credentials {
                principal,
                secret: opts.secret.as_deref(),
            });
            match open_subscription(
                &http,
                &master,
                opts.content_type,
                body.clone(),
                credentials,
                opts.request_timeout,
            )
            .await?
            {
                Opened::Stream { resp, stream_id } => break (resp, stream_id),
                Opened::Redirect(to) if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    master = to;
                }
                Opened::Redirect(to) => {
                    return Err(Error::Http {
                        master,
                        detail: format!("too many redirects (last to {to})"),
                    })
                }
            }
        };
        let decoder = Decoder::new(opts.max_record_bytes);
        let mut sub = Subscription {
            caller: Caller {
                http,
                master,
                framework_id: String::new(),
                stream_id,
                opts: Arc::new(opts),
            },
            // Until SUBSCRIBED says otherwise, the first event must come within the timeout.
            heartbeat_interval: Duration::ZERO,
            body: Box::pin(resp.bytes_stream()),
            decoder,
            ready: VecDeque::new(),
        };
        let first = sub.next_event().await?;
        let t = first.r#type.and_then(|t| event::Type::try_from(t).ok());
        match (t, first.subscribed, first.error) {
            (Some(event::Type::Subscribed), Some(s), _) => {
                sub.caller.framework_id = s.framework_id.value;
                sub.heartbeat_interval = s
                    .heartbeat_interval_seconds
                    .filter(|i| i.is_finite() && *i > 0.0)
                    .map(|i| Duration::from_secs_f64(i.min(3600.0)))
                    .unwrap_or(Duration::from_secs(15));
                Ok(sub)
            }
            (Some(event::Type::Error), _, e) => Err(Error::Refused {
                master: sub.caller.master,
                message: e.map(|e| e.message).unwrap_or_default(),
            }),
            (t, _, _) => Err(Error::Http {
                master: sub.caller.master,
                detail: format!(
                    "expected SUBSCRIBED as the first event, got {}",
                    t.map(|t| t.as_str_name()).unwrap_or("an unknown event")
                ),
            }),
        }
    }

    /// The framework id the master confirmed.
    pub fn framework_id(&self) -> &str {
        &self.caller.framework_id
    }

    /// The master that answered (after redirects), `host:port`.
    pub fn master(&self) -> &str {
        &self.caller.master
    }

    pub fn stream_id(&self) -> &str {
        &self.caller.stream_id
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// A handle that sends calls on this subscription.
    pub fn caller(&self) -> Caller {
        self.caller.clone()
    }

    /// The next event, HEARTBEATs included. An error when the stream ends, breaks, carries
    /// a malformed record, or stays silent for `missed_heartbeats` heartbeat intervals.
    pub async fn next_event(&mut self) -> Result<Event, Error> {
        let silence = if self.heartbeat_interval.is_zero() {
            self.caller.opts.request_timeout
        } else {
            self.heartbeat_interval * self.caller.opts.missed_heartbeats.max(1)
        };
        let deadline = tokio::time::Instant::now() + silence;
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(ev);
            }
            let chunk = match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => {
                    return Err(Error::HeartbeatTimeout {
                        master: self.caller.master.clone(),
                        secs: silence.as_secs_f64(),
                    })
                }
                Ok(None) => {
                    self.decoder.finish()?;
                    return Err(Error::Http {
                        master: self.caller.master.clone(),
                        detail: "the master closed the event stream".into(),
                    });
                }
                Ok(Some(Err(e))) => {
                    return Err(Error::Http {
                        master: self.caller.master.clone(),
                        detail: format!("event stream broke: {e}"),
                    })
                }
                Ok(Some(Ok(c))) => c,
            };
            self.decoder.push(&chunk);
            while let Some(record) = self.decoder.next_record()? {
                let ev = decode_event(self.caller.opts.content_type, &record)?;
                self.ready.push_back(ev);
            }
        }
    }
}

impl Caller {
    pub fn framework_id(&self) -> &str {
        &self.framework_id
    }

    /// Send a call of type `t`, filled in by `fill`, with this framework's id. Success is a
    /// 2xx answer; anything else is [`Error::Status`] with the master's message.
    pub async fn call(&self, t: call::Type, fill: impl FnOnce(&mut Call)) -> Result<(), Error> {
        let mut c = Call {
            framework_id: Some(FrameworkId {
                value: self.framework_id.clone(),
            }),
            r#type: Some(t as i32),
            ..Default::default()
        };
        fill(&mut c);
        let o = &self.opts;
        let credentials = o.principal.as_deref().map(|principal| Credentials {
            principal,
            secret: o.secret.as_deref(),
        });
        post_call(
            &self.http,
            &self.master,
            o.content_type,
            &self.stream_id,
            credentials,
            o.request_timeout,
            &c,
        )
        .await
    }

    /// ACCEPT `offer_ids` (all on one agent) with `operations`.
    pub async fn accept(
        &self,
        offer_ids: Vec<v1::OfferId>,
        operations: Vec<offer::Operation>,
        filters: Option<v1::Filters>,
    ) -> Result<(), Error> {
        self.call(call::Type::Accept, |c| {
            c.accept = Some(call::Accept {
                offer_ids,
                operations,
                filters,
            })
        })
        .await
    }

    /// DECLINE `offer_ids`; `refuse_seconds` keeps those agents out of offers for that long.
    pub async fn decline(
        &self,
        offer_ids: Vec<v1::OfferId>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), Error> {
        self.call(call::Type::Decline, |c| {
            c.decline = Some(call::Decline {
                offer_ids,
                filters: refuse_seconds.map(|s| v1::Filters {
                    refuse_seconds: Some(s),
                }),
            })
        })
        .await
    }

    /// Acknowledge an operation status. Only statuses with a `uuid` and an `operation_id`
    /// await an acknowledgement; for others nothing is sent and the answer is `Ok(false)`.
    pub async fn acknowledge_operation_status(
        &self,
        status: &v1::OperationStatus,
    ) -> Result<bool, Error> {
        let (Some(uuid), Some(operation_id)) = (&status.uuid, &status.operation_id) else {
            return Ok(false);
        };
        self.call(call::Type::AcknowledgeOperationStatus, |c| {
            c.acknowledge_operation_status = Some(call::AcknowledgeOperationStatus {
                agent_id: status.agent_id.clone(),
                resource_provider_id: status.resource_provider_id.clone(),
                uuid: uuid.value.clone(),
                operation_id: operation_id.clone(),
            })
        })
        .await?;
        Ok(true)
    }

    /// Ask for the latest status of `operation_ids` (all of the framework's when empty).
    pub async fn reconcile_operations(&self, operation_ids: &[&str]) -> Result<(), Error> {
        let operations = operation_ids
            .iter()
            .map(|id| call::reconcile_operations::Operation {
                operation_id: v1::OperationId {
                    value: id.to_string(),
                },
                ..Default::default()
            })
            .collect();
        self.call(call::Type::ReconcileOperations, |c| {
            c.reconcile_operations = Some(call::ReconcileOperations { operations })
        })
        .await
    }

    /// REVIVE: clear filters and resume offers.
    pub async fn revive(&self) -> Result<(), Error> {
        self.call(call::Type::Revive, |c| {
            c.revive = Some(call::Revive::default())
        })
        .await
    }

    /// TEARDOWN: end the framework (the master closes its stream).
    pub async fn teardown(&self) -> Result<(), Error> {
        self.call(call::Type::Teardown, |_| {}).await
    }
}

/// A CREATE_DISK operation turning `mb` of the RAW disk `raw` (a resource of an offer) into
/// a volume of `target` type; `raw` is copied with its scalar set to `mb`.
pub fn create_disk(
    operation_id: &str,
    raw: &v1::Resource,
    mb: f64,
    target: resource::disk_info::source::Type,
) -> offer::Operation {
    let mut source = raw.clone();
    source.scalar = Some(v1::value::Scalar { value: mb });
    offer::Operation {
        r#type: Some(offer::operation::Type::CreateDisk as i32),
        id: Some(v1::OperationId {
            value: operation_id.to_string(),
        }),
        create_disk: Some(offer::operation::CreateDisk {
            source,
            target_type: target as i32,
            target_profile: None,
        }),
        ..Default::default()
    }
}

/// A DESTROY_DISK operation for `disk` (a MOUNT or BLOCK disk with `disk.source.id`).
pub fn destroy_disk(operation_id: &str, disk: &v1::Resource) -> offer::Operation {
    offer::Operation {
        r#type: Some(offer::operation::Type::DestroyDisk as i32),
        id: Some(v1::OperationId {
            value: operation_id.to_string(),
        }),
        destroy_disk: Some(offer::operation::DestroyDisk {
            source: disk.clone(),
        }),
        ..Default::default()
    }
}

/// The `disk.source` of a resource, when it has one.
pub fn disk_source(r: &v1::Resource) -> Option<&resource::disk_info::Source> {
    r.disk.as_ref()?.source.as_ref()
}
