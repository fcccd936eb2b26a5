//! The admin API's request extractors and its last-resort error layer: a bad query string, a
//! path that does not decode, a body that cannot be read and any error another layer answers
//! in plain text all become the `{"error","message"}` body of [`ApiError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::ApiError;

/// Longest stretch of a client's input quoted back in an error message.
const QUOTE_MAX: usize = 200;

/// `input` for an error message: at most [`QUOTE_MAX`] bytes (cut on a char boundary), so a
/// megabyte query string is not echoed whole.
fn quote(input: &str) -> String {
    if input.len() <= QUOTE_MAX {
        return format!("{input:?}");
    }
    let mut end = QUOTE_MAX;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &input[..end], input.len())
}

/// The query string, parsed like axum's `Query`; a bad one is a 400 naming it.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(t)) => Ok(Query(t)),
            Err(e) => {
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "invalid query string {}: {detail}",
                        quote(parts.uri.query().unwrap_or(""))
                    ),
                ))
            }
        }
    }
}

/// Path parameters, parsed like axum's `Path`; a path that does not decode (a percent
/// escape that is not UTF-8) is a 400 naming it.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(t)) => Ok(Path(t)),
            Err(e) => Err(ApiError::new(
                if e.status().is_server_error() {
                    e.status()
                } else {
                    StatusCode::BAD_REQUEST
                },
                "bad_request",
                format!(
                    "invalid path {}: {}",
                    quote(parts.uri.path()),
                    e.body_text().to_lowercase()
                ),
            )),
        }
    }
}

/// The raw request body (parsed as JSON by `admin::body`); one that is too large or breaks
/// off is refused in this API's format.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) => {
                let (status, code) = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
                } else {
                    (StatusCode::BAD_REQUEST, "bad_request")
                };
                Err(ApiError::new(
                    status,
                    code,
                    format!("cannot read the request body: {}", e.body_text()),
                ))
            }
        }
    }
}

/// The stable code of an error some other layer answered (a timeout, a limit).
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Every error leaves the admin API as JSON: an error response another layer wrote in plain
/// text (or with no body) is rewritten to `{"error","message"}`, its text as the message and
/// its other headers (`Allow`, `Retry-After`) kept.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(res.headers()) {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut out = ApiError::new(status, code_for(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    async fn call(app: Router, uri: &str) -> (StatusCode, HeaderMap, serde_json::Value) {
        let res = app
            .oneshot(Request::get(uri).body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn plain_text_errors_become_json_and_keep_their_headers() {
        let app = Router::new()
            .route(
                "/t",
                get(|| async {
                    (
                        StatusCode::REQUEST_TIMEOUT,
                        [(header::RETRY_AFTER, "1")],
                        "request took too long",
                    )
                }),
            )
            .route("/e", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
            .layer(axum::middleware::from_fn(json_errors));
        let (status, headers, body) = call(app.clone(), "/t").await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body,
            serde_json::json!({"error": "request_timeout", "message": "request took too long"})
        );
        let (_, _, body) = call(app, "/e").await;
        assert_eq!(
            body,
            serde_json::json!({"error": "internal_error", "message": "internal server error"})
        );
    }

    #[tokio::test]
    async fn a_bad_query_names_the_query_string() {
        #[derive(serde::Deserialize)]
        struct Q {
            #[allow(dead_code)]
            all: bool,
        }
        let app = Router::new().route("/q", get(|_: Query<Q>| async { "ok" }));
        let (status, _, body) = call(app, "/q?all=maybe").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.starts_with("invalid query string \"all=maybe\": "),
            "{msg}"
        );
    }

    #[test]
    fn long_input_is_quoted_cut() {
        let q = quote(&"é".repeat(500));
        assert!(q.ends_with("… (1000 bytes)"), "{q}");
        assert!(q.len() < 250, "{q}");
    }
}
