//! HTTP with a master's scheduler endpoint: a SUBSCRIBE and its answer (status, redirect to
//! the leader, `Mesos-Stream-Id`), one call on a subscription, Basic credentials, and
//! bounded reads of response bodies.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;

use super::encoding::encode_call;
use super::{content_type, MesosContentType, ERROR_BODY_LIMIT, SCHEDULER_PATH, STREAM_ID_HEADER};
use crate::mesos::v1::scheduler::Call;
use crate::mesos::Error;

/// `//host:port/path` (what a master sends), `http://host:port/...` or `host:port` →
/// `host:port`.
pub fn location_master(loc: &str) -> Option<String> {
    let rest = loc
        .strip_prefix("//")
        .or_else(|| loc.strip_prefix("http://"))
        .or_else(|| loc.strip_prefix("https://"))
        .unwrap_or(loc);
    let hostport = rest.split('/').next()?;
    (!hostport.is_empty()).then(|| hostport.to_string())
}

/// HTTP Basic credentials sent with every request to a master.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub principal: &'a str,
    pub secret: Option<&'a str>,
}

pub(super) fn with_credentials(
    req: reqwest::RequestBuilder,
    credentials: Option<Credentials<'_>>,
) -> reqwest::RequestBuilder {
    match credentials {
        Some(c) => req.basic_auth(c.principal, c.secret),
        None => req,
    }
}

/// What a SUBSCRIBE request got back.
pub(crate) enum Opened {
    /// 307: the leading master, `host:port`.
    Redirect(String),
    /// 200: the event stream (still to be read) and its `Mesos-Stream-Id`.
    Stream {
        resp: reqwest::Response,
        stream_id: String,
    },
}

/// POST an encoded SUBSCRIBE to `master` and check the answer's status and headers; the
/// body, if any, is the event stream. `timeout` bounds the wait for the response headers.
pub(crate) async fn open_subscription(
    http: &reqwest::Client,
    master: &str,
    ct: MesosContentType,
    body: Vec<u8>,
    credentials: Option<Credentials<'_>>,
    timeout: Duration,
) -> Result<Opened, Error> {
    let http_err = |detail: String| Error::Http {
        master: master.to_string(),
        detail,
    };
    let req = http
        .post(format!("http://{master}{SCHEDULER_PATH}"))
        .header(CONTENT_TYPE, content_type(ct))
        .header(ACCEPT, content_type(ct))
        .body(body);
    let resp = match tokio::time::timeout(timeout, with_credentials(req, credentials).send()).await
    {
        Err(_) => {
            return Err(http_err(format!(
                "no SUBSCRIBE response within {timeout:?}"
            )))
        }
        Ok(Err(e)) => return Err(http_err(format!("SUBSCRIBE failed: {e}"))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if status == StatusCode::TEMPORARY_REDIRECT {
        return resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(location_master)
            .map(Opened::Redirect)
            .ok_or_else(|| http_err("307 without a usable Location".into()));
    }
    if status != StatusCode::OK {
        let text = tokio::time::timeout(timeout, read_limited(resp, ERROR_BODY_LIMIT))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(Error::Status {
            master: master.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&text).chars().take(200).collect(),
        });
    }
    let Some(stream_id) = resp
        .headers()
        .get(STREAM_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return Err(http_err(
            "SUBSCRIBE answered 200 without Mesos-Stream-Id".into(),
        ));
    };
    Ok(Opened::Stream { resp, stream_id })
}

/// POST one call (not SUBSCRIBE) on the subscription `stream_id`; any 2xx is success.
pub(crate) async fn post_call(
    http: &reqwest::Client,
    master: &str,
    ct: MesosContentType,
    stream_id: &str,
    credentials: Option<Credentials<'_>>,
    timeout: Duration,
    c: &Call,
) -> Result<(), Error> {
    let body = encode_call(ct, c)?;
    let req = http
        .post(format!("http://{master}{SCHEDULER_PATH}"))
        .header(CONTENT_TYPE, content_type(ct))
        .header(STREAM_ID_HEADER, stream_id)
        .timeout(timeout)
        .body(body);
    let resp = with_credentials(req, credentials)
        .send()
        .await
        .map_err(|e| Error::Http {
            master: master.to_string(),
            detail: e.to_string(),
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = read_limited(resp, ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    Err(Error::Status {
        master: master.to_string(),
        status: status.as_u16(),
        body: String::from_utf8_lossy(&text).chars().take(200).collect(),
    })
}

/// At most `limit` bytes of a response body (never buffers an unbounded body).
pub(super) async fn read_limited(
    resp: reqwest::Response,
    limit: usize,
) -> reqwest::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let room = limit - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_relative_locations() {
        assert_eq!(
            location_master("//m2:5050/api/v1/scheduler").as_deref(),
            Some("m2:5050")
        );
        assert_eq!(location_master("m2:5050").as_deref(), Some("m2:5050"));
        assert_eq!(
            location_master("http://10.0.0.2:5050/master/api/v1/scheduler").as_deref(),
            Some("10.0.0.2:5050")
        );
        assert_eq!(location_master("//"), None);
    }
}
