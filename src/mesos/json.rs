//! The Mesos JSON mapping (stout's `protobuf.hpp` conventions), both directions, driven by
//! the compiled descriptors of `proto/`: proto field names (snake_case), enums as name
//! strings, bytes as standard base64, 64-bit integers as numbers (strings accepted on
//! input), maps as objects, unknown keys ignored and an unknown enum name dropped.
//!
//! Output also prints unset optional fields that have an explicit default and are not
//! deprecated (`failover_timeout: 0`, `checkpoint: false`, `refuse_seconds: 5`, an agent's
//! `port`), as stout does; deprecated ones (`role: "*"`) appear only when set.
//!
//! As in Mesos, a message missing a `required` field (also one whose required enum had an
//! unknown name) is rejected, naming the fields.
//!
//! Conversion goes through `prost_reflect::DynamicMessage`, so every field of every message
//! follows the same rules without hand-written serde code that could drift from the protos.

use std::sync::LazyLock;

use prost::{Message, Name};
use prost_reflect::{
    Cardinality, DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor,
    ReflectMessage, SerializeOptions, Value,
};

use super::Error;

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesos_descriptors.bin"));

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    // The bytes were produced by build.rs from the same protos; failing here is a build bug.
    DescriptorPool::decode(DESCRIPTORS).expect("descriptor set written by build.rs decodes")
});

/// The descriptors of every Mesos message Polly compiles (`proto/mesos`), for tools and
/// tests that work on messages field by field.
pub fn descriptors() -> &'static DescriptorPool {
    &POOL
}

fn descriptor<M: Name>() -> Result<MessageDescriptor, Error> {
    POOL.get_message_by_name(&M::full_name())
        .ok_or_else(|| Error::UnknownMessage(M::full_name()))
}

fn ser_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .use_enum_numbers(false)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true)
}

fn de_options() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(false)
}

fn to_dynamic<M: Message + Name>(m: &M) -> Result<DynamicMessage, Error> {
    let desc = descriptor::<M>()?;
    let mut dm = DynamicMessage::decode(desc, m.encode_to_vec().as_slice()).map_err(|e| {
        Error::Protobuf {
            message: M::full_name(),
            detail: e.to_string(),
        }
    })?;
    fill_defaults(&mut dm);
    Ok(dm)
}

/// Set unset optional fields with an explicit, non-deprecated default to that default,
/// recursively through set sub-messages (stout prints them).
fn fill_defaults(m: &mut DynamicMessage) {
    for f in m.descriptor().fields() {
        let proto = f.field_descriptor_proto();
        let deprecated = proto.options.as_ref().and_then(|o| o.deprecated) == Some(true);
        if !m.has_field(&f) {
            if f.cardinality() == Cardinality::Optional
                && proto.default_value.is_some()
                && !deprecated
            {
                let v = m.get_field(&f).into_owned();
                m.set_field(&f, v);
            }
            continue;
        }
        match m.get_field_mut(&f) {
            Value::Message(sub) => fill_defaults(sub),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(sub) = item {
                        fill_defaults(sub);
                    }
                }
            }
            Value::Map(map) => {
                for v in map.values_mut() {
                    if let Value::Message(sub) = v {
                        fill_defaults(sub);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Serialize a message as Mesos JSON bytes.
pub fn to_json<M: Message + Name>(m: &M) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    write_json(m, &mut out)?;
    Ok(out)
}

/// Serialize a message as Mesos JSON, appended to `out` (on error `out` may hold part of
/// it). The dynamic message tree the conversion goes through lives only for this call, so
/// writing the parts of a large message one by one bounds it by the largest part.
pub fn write_json<M: Message + Name>(m: &M, out: &mut Vec<u8>) -> Result<(), Error> {
    let dm = to_dynamic(m)?;
    let mut ser = serde_json::Serializer::new(out);
    dm.serialize_with_options(&mut ser, &ser_options())
        .map_err(|e| Error::Json {
            message: M::full_name(),
            detail: e.to_string(),
        })
}

/// Serialize a message as a Mesos JSON value.
pub fn to_value<M: Message + Name>(m: &M) -> Result<serde_json::Value, Error> {
    let dm = to_dynamic(m)?;
    dm.serialize_with_options(serde_json::value::Serializer, &ser_options())
        .map_err(|e| Error::Json {
            message: M::full_name(),
            detail: e.to_string(),
        })
}

/// Parse Mesos JSON bytes into a message.
pub fn from_json<M: Message + Name + Default>(bytes: &[u8]) -> Result<M, Error> {
    let desc = descriptor::<M>()?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let dm = DynamicMessage::deserialize_with_options(desc, &mut de, &de_options())
        .and_then(|dm| de.end().map(|()| dm))
        .map_err(|e| Error::Json {
            message: M::full_name(),
            detail: e.to_string(),
        })?;
    finish(dm)
}

/// Parse a Mesos JSON value into a message.
pub fn from_value<M: Message + Name + Default>(v: &serde_json::Value) -> Result<M, Error> {
    let desc = descriptor::<M>()?;
    let dm = DynamicMessage::deserialize_with_options(desc, v, &de_options()).map_err(|e| {
        Error::Json {
            message: M::full_name(),
            detail: e.to_string(),
        }
    })?;
    finish(dm)
}

/// Decodes a JSON array of `M` messages from inside a larger document (a serde
/// `DeserializeSeed`), one element at a time: each element's dynamic form is dropped as soon
/// as it is converted, so a list of 10,000 offers never exists as one tree of dynamic
/// messages. Elements follow the same rules as [`from_json`].
pub struct ListSeed<M>(std::marker::PhantomData<M>);

impl<M> Default for ListSeed<M> {
    fn default() -> Self {
        ListSeed(std::marker::PhantomData)
    }
}

impl<'de, M: Message + Name + Default> serde::de::DeserializeSeed<'de> for ListSeed<M> {
    type Value = Vec<M>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<M>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, M: Message + Name + Default> serde::de::Visitor<'de> for ListSeed<M> {
    type Value = Vec<M>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a list of {}", M::full_name())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<M>, A::Error> {
        use serde::de::Error as _;
        let desc = descriptor::<M>().map_err(A::Error::custom)?;
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(dm) = seq.next_element_seed(MessageSeed(&desc))? {
            out.push(finish(dm).map_err(A::Error::custom)?);
        }
        Ok(out)
    }
}

struct MessageSeed<'a>(&'a MessageDescriptor);

impl<'de> serde::de::DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = DynamicMessage;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<DynamicMessage, D::Error> {
        DynamicMessage::deserialize_with_options(self.0.clone(), d, &de_options())
    }
}

fn finish<M: Message + Name + Default>(dm: DynamicMessage) -> Result<M, Error> {
    let mut missing = Vec::new();
    missing_required(&dm, "", &mut missing);
    if !missing.is_empty() {
        return Err(Error::Json {
            message: M::full_name(),
            detail: format!("missing required fields: {}", missing.join(", ")),
        });
    }
    transcode(dm)
}

fn transcode<M: Message + Name + Default>(dm: DynamicMessage) -> Result<M, Error> {
    dm.transcode_to::<M>().map_err(|e| Error::Protobuf {
        message: M::full_name(),
        detail: e.to_string(),
    })
}

/// Paths of unset `required` fields, recursively through set sub-messages.
fn missing_required(m: &DynamicMessage, path: &str, out: &mut Vec<String>) {
    for f in m.descriptor().fields() {
        let name = if path.is_empty() {
            f.name().to_string()
        } else {
            format!("{path}.{}", f.name())
        };
        if !m.has_field(&f) {
            if f.cardinality() == Cardinality::Required {
                out.push(name);
            }
            continue;
        }
        match &*m.get_field(&f) {
            Value::Message(sub) => missing_required(sub, &name, out),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(sub) = item {
                        missing_required(sub, &format!("{name}[{i}]"), out);
                    }
                }
            }
            Value::Map(map) => {
                for (k, v) in map {
                    if let Value::Message(sub) = v {
                        missing_required(sub, &format!("{name}[{k:?}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Parse protobuf bytes from a client into a message, refusing one that leaves a `required`
/// field unset (as a master does, with 400): prost's types cannot tell an unset required
/// string or enum from its default, so the bytes are read through the descriptors first.
pub fn from_protobuf_checked<M: Message + Name + Default>(bytes: &[u8]) -> Result<M, Error> {
    let dm = DynamicMessage::decode(descriptor::<M>()?, bytes).map_err(|e| Error::Protobuf {
        message: M::full_name(),
        detail: e.to_string(),
    })?;
    let mut missing = Vec::new();
    missing_required(&dm, "", &mut missing);
    if !missing.is_empty() {
        return Err(Error::Protobuf {
            message: M::full_name(),
            detail: format!("missing required fields: {}", missing.join(", ")),
        });
    }
    transcode(dm)
}

/// Parse protobuf bytes into a message, with this module's error type.
pub fn from_protobuf<M: Message + Name + Default>(bytes: &[u8]) -> Result<M, Error> {
    M::decode(bytes).map_err(|e| Error::Protobuf {
        message: M::full_name(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
