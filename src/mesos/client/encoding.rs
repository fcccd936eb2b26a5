//! Calls and events in the configured encoding (JSON or protobuf). A JSON OFFERS event is
//! read one offer at a time, the largest event a master sends.

use prost::Message;

use super::MesosContentType;
use crate::mesos::v1::scheduler::{event, Call, Event};
use crate::mesos::{json, v1, Error};

/// Encode a call in the configured encoding.
pub fn encode_call(ct: MesosContentType, c: &Call) -> Result<Vec<u8>, Error> {
    match ct {
        MesosContentType::Json => json::to_json(c),
        MesosContentType::Protobuf => Ok(c.encode_to_vec()),
    }
}

/// Decode an event in the configured encoding.
pub fn decode_event(ct: MesosContentType, b: &[u8]) -> Result<Event, Error> {
    match ct {
        MesosContentType::Json => match offers_from_json(b) {
            Some(ev) => Ok(ev),
            None => json::from_json(b),
        },
        MesosContentType::Protobuf => json::from_protobuf(b),
    }
}

/// A JSON OFFERS event, its offers decoded one at a time (decoded whole, the dynamic form of
/// an event with 10,000 offers took about 90 MB at once). `None` for any other event, and for
/// anything this narrower reading does not take (then the full decoding runs and answers,
/// errors included).
fn offers_from_json(b: &[u8]) -> Option<Event> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    /// `{"type": ..., "offers": {"offers": [...]}}`, other keys skipped.
    struct Top;
    impl<'de> Visitor<'de> for Top {
        type Value = (Option<String>, Option<Vec<v1::Offer>>);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a scheduler event")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut kind, mut offers) = (None, None);
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "type" => kind = Some(map.next_value::<String>()?),
                    "offers" => offers = Some(map.next_value_seed(OffersBody)?),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok((kind, offers))
        }
    }
    /// `{"offers": [...]}`, other keys skipped.
    struct OffersBody;
    impl<'de> DeserializeSeed<'de> for OffersBody {
        type Value = Vec<v1::Offer>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for OffersBody {
        type Value = Vec<v1::Offer>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an OFFERS event's offers")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut offers = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                if key == "offers" {
                    offers = map.next_value_seed(json::ListSeed::<v1::Offer>::default())?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(offers)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(b);
    let (kind, offers) = de.deserialize_map(Top).ok()?;
    de.end().ok()?;
    if kind.as_deref() != Some("OFFERS") {
        return None;
    }
    Some(Event {
        r#type: Some(event::Type::Offers as i32),
        offers: offers.map(|offers| event::Offers { offers }),
        ..Event::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OFFERS event decoded one offer at a time equals the full decoding; other events
    /// and offers the narrow reading refuses go to the full decoding, errors included.
    #[test]
    fn offers_events_decode_one_offer_at_a_time_like_the_full_decoding() {
        let offer = |i: usize| {
            format!(
                r#"{{"id":{{"value":"o{i}"}},"framework_id":{{"value":"fw"}},"agent_id":{{"value":"a{i}"}},
                "hostname":"node-{i}","domain":{{"fault_domain":{{"region":{{"name":"eu"}},"zone":{{"name":"eu-a"}}}}}},
                "resources":[{{"name":"disk","type":"SCALAR","scalar":{{"value":1024}}}}],
                "attributes":[{{"name":"rack","type":"TEXT","text":{{"value":"r{i}"}}}}]}}"#
            )
        };
        let offers: Vec<String> = (0..3).map(offer).collect();
        let ev = format!(
            r#"{{"extra":{{"x":[1,2]}},"offers":{{"offers":[{}],"more":1}},"type":"OFFERS"}}"#,
            offers.join(",")
        );
        let narrow = offers_from_json(ev.as_bytes()).expect("an OFFERS event");
        let full: Event = json::from_json(ev.as_bytes()).unwrap();
        assert_eq!(narrow, full);
        assert_eq!(narrow.offers.as_ref().unwrap().offers.len(), 3);
        assert_eq!(
            decode_event(MesosContentType::Json, ev.as_bytes()).unwrap(),
            full
        );

        let hb = br#"{"type":"HEARTBEAT"}"#;
        assert!(offers_from_json(hb).is_none());
        assert_eq!(
            decode_event(MesosContentType::Json, hb).unwrap(),
            json::from_json::<Event>(hb).unwrap()
        );

        // An offer without its required id: the full decoding's error, naming the field.
        let bad = ev.replacen(r#""id":{"value":"o1"},"#, "", 1);
        assert!(offers_from_json(bad.as_bytes()).is_none());
        let e = decode_event(MesosContentType::Json, bad.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            json::from_json::<Event>(bad.as_bytes())
                .unwrap_err()
                .to_string()
        );
        assert!(e.to_string().contains("missing required fields"), "{e}");
    }
}
