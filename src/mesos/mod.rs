//! Mesos v1: the generated protobuf types (from `proto/`), the Mesos JSON mapping, the
//! RecordIO framing, the scheduler client that subscribes Polly to a Mesos master, and which
//! instance each agent stands for (`agents`). The storage-offer endpoint that serves the
//! scheduler API to frameworks is `crate::offer_endpoint`.

pub mod agents;
pub mod client;
pub mod json;
pub mod recordio;

/// Generated Mesos v1 types (package `mesos.v1`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));

    /// Generated scheduler API envelopes (package `mesos.v1.scheduler`).
    #[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    pub mod scheduler {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.scheduler.rs"));
    }
}

/// Errors at the Mesos boundary: framing, decoding and talking to a master.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("recordio: record length {len} exceeds the maximum of {max} bytes")]
    RecordTooLarge { len: u64, max: u64 },
    #[error("recordio: zero record length (the length prefix must be at least 1)")]
    ZeroLength,
    #[error(
        "recordio: invalid length prefix {prefix:?}: expected ASCII decimal digits then '\\n'"
    )]
    BadPrefix { prefix: String },
    #[error("recordio: stream ended inside a record ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    #[error("invalid Mesos JSON for {message}: {detail}")]
    Json { message: String, detail: String },
    #[error("invalid protobuf for {message}: {detail}")]
    Protobuf { message: String, detail: String },
    #[error("unknown Mesos message type {0}")]
    UnknownMessage(String),
    #[error("master {master}: {detail}")]
    Http { master: String, detail: String },
    #[error("master {master} answered {status}: {body}")]
    Status {
        master: String,
        status: u16,
        body: String,
    },
    #[error("master {master}: no heartbeat or event for {secs:.1}s; reconnecting")]
    HeartbeatTimeout { master: String, secs: f64 },
    #[error("master {master} refused the subscription: {message}")]
    Refused { master: String, message: String },
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
}
