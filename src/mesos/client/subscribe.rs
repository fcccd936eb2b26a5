//! The client's subscription loop: SUBSCRIBE to a master with the stored framework id,
//! follow redirects to the leader, back off with jitter and subscribe again until
//! cancelled; and the task that sends one subscription's calls in order.

use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::encoding::encode_call;
use super::events::Stream;
use super::transport::{open_subscription, post_call, Credentials, Opened};
use super::{Client, ConnState, Handle, MesosConfig, MAX_REDIRECTS};
use crate::mesos::v1::scheduler::{call, Call};
use crate::mesos::v1::{framework_info, FrameworkId, FrameworkInfo};
use crate::mesos::Error;

/// Exponential backoff with jitter, capped.
#[derive(Debug)]
pub struct Backoff {
    initial: u64,
    max: u64,
    failures: u32,
}

impl Backoff {
    pub fn new(initial_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            initial: initial_ms.max(1),
            max: max_ms.max(initial_ms.max(1)),
            failures: 0,
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The next delay: uniform in [d/2, d] where d = min(max, initial * 2^failures).
    pub fn next_delay(&mut self) -> Duration {
        let d = self
            .initial
            .saturating_mul(1u64 << self.failures.min(32))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        Duration::from_millis(rand::rng().random_range(d / 2..=d))
    }
}

/// How one subscription attempt ended.
enum Ended {
    Redirect(String),
    /// `subscribed`: the attempt reached SUBSCRIBED (so the next one starts a fresh backoff).
    Failed {
        error: Error,
        subscribed: bool,
    },
    Cancelled,
}

impl Client {
    fn subscribe_call(&self, framework_id: Option<&str>) -> Call {
        let fid = framework_id.map(|v| FrameworkId {
            value: v.to_string(),
        });
        let cfg = &self.cfg;
        let capabilities = cfg
            .capabilities
            .iter()
            .filter_map(|c| framework_info::capability::Type::from_str_name(c))
            .map(|t| framework_info::Capability {
                r#type: Some(t as i32),
            })
            .collect();
        Call {
            framework_id: fid.clone(),
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                framework_info: FrameworkInfo {
                    user: cfg.user.clone(),
                    name: cfg.framework_name.clone(),
                    id: fid,
                    failover_timeout: Some(cfg.failover_timeout_secs),
                    checkpoint: Some(cfg.checkpoint),
                    roles: cfg.roles.clone(),
                    principal: cfg.principal.clone(),
                    capabilities,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Subscribe, follow redirects, back off and re-subscribe until cancelled.
    pub async fn run(self, token: CancellationToken) {
        let masters = self.cfg.masters.clone();
        if masters.is_empty() {
            return;
        }
        let mut backoff = Backoff::new(self.cfg.backoff_initial_ms, self.cfg.backoff_max_ms);
        let mut next = 0usize;
        let mut preferred: Option<String> = None;
        let mut redirects = 0u32;
        loop {
            let master = preferred.take().unwrap_or_else(|| {
                let m = masters[next % masters.len()].clone();
                next = next.wrapping_add(1);
                m
            });
            self.handle.update(|s| {
                s.state = ConnState::Connecting;
                s.master = Some(master.clone());
                s.backoff_ms = None;
            });
            let ended = self.session(&master, &token).await;
            self.handle.metrics().connected.set(0);
            self.handle.update(|s| s.stream_id = None);
            match ended {
                Ended::Cancelled => break,
                Ended::Redirect(to) if redirects < MAX_REDIRECTS => {
                    tracing::info!(from = %master, to = %to, "mesos: following redirect to the leading master");
                    redirects += 1;
                    preferred = Some(to);
                    continue;
                }
                Ended::Redirect(to) => {
                    self.failed(&Error::Http {
                        master: master.clone(),
                        detail: format!("too many redirects (last to {to})"),
                    });
                }
                Ended::Failed { error, subscribed } => {
                    self.failed(&error);
                    if subscribed {
                        // The master worked a moment ago: try it again first, quickly.
                        backoff.reset();
                        preferred = Some(master.clone());
                    }
                }
            }
            redirects = 0;
            let delay = backoff.next_delay();
            self.handle.update(|s| {
                s.state = ConnState::BackingOff;
                s.backoff_ms = Some(delay.as_millis() as u64);
            });
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.handle.update(|s| {
            s.state = ConnState::Stopped;
            s.backoff_ms = None;
        });
    }

    fn failed(&self, e: &Error) {
        tracing::warn!(error = %e, "mesos: subscription attempt failed or ended");
        self.handle.metrics().reconnects.inc();
        self.handle.update(|s| s.last_error = Some(e.to_string()));
    }

    /// One SUBSCRIBE and the life of its stream.
    async fn session(&self, master: &str, token: &CancellationToken) -> Ended {
        let fail = |error| Ended::Failed {
            error,
            subscribed: false,
        };
        let ct = self.cfg.content_type;
        let timeout = Duration::from_secs_f64(self.cfg.request_timeout_secs);
        let fid = match self.stored_framework_id() {
            Ok(f) => f,
            Err(e) => return fail(e),
        };
        let body = match encode_call(ct, &self.subscribe_call(fid.as_deref())) {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        let opened = tokio::select! {
            _ = token.cancelled() => return Ended::Cancelled,
            r = open_subscription(
                &self.stream_http,
                master,
                ct,
                body,
                self.credentials(),
                timeout,
            ) => r,
        };
        let (resp, stream_id) = match opened {
            Ok(Opened::Redirect(to)) => return Ended::Redirect(to),
            Ok(Opened::Stream { resp, stream_id }) => (resp, stream_id),
            Err(e) => return fail(e),
        };
        let (calls_tx, calls_rx) = mpsc::unbounded_channel();
        let sender = tokio::spawn(call_sender(
            self.call_http.clone(),
            master.to_string(),
            stream_id.clone(),
            self.cfg.clone(),
            self.handle.clone(),
            calls_rx,
        ));
        let mut s = Stream {
            client: self,
            master,
            calls: calls_tx,
            framework_id: None,
            subscribed: false,
            suppressed: false,
        };
        self.handle
            .update(|st| st.stream_id = Some(stream_id.clone()));
        let r = s.read(resp.bytes_stream(), token).await;
        // Calls already queued (e.g. a DECLINE) still go out; then the sender stops.
        drop(s.calls);
        let _ = tokio::time::timeout(Duration::from_secs(2), sender).await;
        match r {
            Ok(()) => Ended::Cancelled,
            Err(error) => Ended::Failed {
                error,
                subscribed: s.subscribed,
            },
        }
    }
}

/// Sends queued calls in order on the call connections, with `Mesos-Stream-Id`.
async fn call_sender(
    http: reqwest::Client,
    master: String,
    stream_id: String,
    cfg: MesosConfig,
    handle: Handle,
    mut rx: mpsc::UnboundedReceiver<Call>,
) {
    let ct = cfg.content_type;
    let timeout = Duration::from_secs_f64(cfg.request_timeout_secs);
    while let Some(c) = rx.recv().await {
        let name = c
            .r#type
            .and_then(|t| call::Type::try_from(t).ok())
            .map(|t| t.as_str_name())
            .unwrap_or("UNKNOWN");
        let credentials = cfg.principal.as_deref().map(|principal| Credentials {
            principal,
            secret: cfg.secret.as_deref(),
        });
        let r = post_call(&http, &master, ct, &stream_id, credentials, timeout, &c).await;
        if let Err(e) = r {
            tracing::warn!(call = name, master = %master, error = %e, "mesos: call failed");
            handle.update(|s| s.last_error = Some(format!("{name} call failed: {e}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesos::json;
    use crate::store::Store;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(100, 1000);
        let ds: Vec<u64> = (0..10).map(|_| b.next_delay().as_millis() as u64).collect();
        assert!((50..=100).contains(&ds[0]), "{ds:?}");
        assert!((100..=200).contains(&ds[1]), "{ds:?}");
        assert!(ds.iter().all(|d| *d <= 1000), "{ds:?}");
        assert!(ds[9] >= 500, "{ds:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn subscribe_sets_both_framework_ids_only_when_resubscribing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cfg = MesosConfig {
            masters: vec!["m:5050".into()],
            ..Default::default()
        };
        let h = Handle::new(&cfg, Default::default());
        let c = Client::new(cfg, store, h).unwrap();
        let fresh = c.subscribe_call(None);
        assert!(fresh.framework_id.is_none());
        assert!(fresh
            .subscribe
            .as_ref()
            .unwrap()
            .framework_info
            .id
            .is_none());
        let again = c.subscribe_call(Some("fw-9"));
        assert_eq!(again.framework_id.as_ref().unwrap().value, "fw-9");
        assert_eq!(
            again
                .subscribe
                .as_ref()
                .unwrap()
                .framework_info
                .id
                .as_ref()
                .unwrap()
                .value,
            "fw-9"
        );
        let j = json::to_value(&again).unwrap();
        assert_eq!(j["type"], "SUBSCRIBE");
        assert_eq!(j["subscribe"]["framework_info"]["name"], "polly");
        assert_eq!(
            j["subscribe"]["framework_info"]["capabilities"][0]["type"],
            "MULTI_ROLE"
        );
    }
}
