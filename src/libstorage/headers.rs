//! Parsers for the `Libstorage-*` request headers (reference §2): instance ids, local
//! devices and the transaction header. Pure functions; the router turns their errors into
//! libStorage error bodies.

use std::collections::BTreeMap;

use base64::Engine;

/// One `Libstorage-Instanceid` header: `DRIVER[:SERVICE]=ID[,FIELDS[,METADATA]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceId {
    pub driver: String,
    pub service: Option<String>,
    pub id: String,
    pub fields: BTreeMap<String, String>,
    /// The decoded metadata: raw JSON the client's executor produced (vfs: the hostname as
    /// a JSON string).
    pub metadata: Option<serde_json::Value>,
}

impl InstanceId {
    /// Parse the header text. Follows the Go regex `^([^=]+)=([^,]*)(?:,(.*?))?(?:,(.+))?$`:
    /// fields end at the first comma after the id, metadata is standard base64 of JSON.
    pub fn parse(s: &str) -> Result<InstanceId, String> {
        let (head, rest) = s
            .split_once('=')
            .ok_or_else(|| "no '=' after the driver name".to_string())?;
        if head.trim().is_empty() {
            return Err("empty driver name".into());
        }
        let (driver, service) = match head.split_once(':') {
            Some((d, s)) if !d.trim().is_empty() && !s.is_empty() => (d, Some(s.to_string())),
            Some(_) => return Err("empty driver or service name".into()),
            None => (head, None),
        };
        let (id, after) = match rest.split_once(',') {
            Some((id, after)) => (id, Some(after)),
            None => (rest, None),
        };
        let (fields, metadata) = match after {
            None => ("", None),
            Some(a) => match a.split_once(',') {
                Some((f, m)) if !m.is_empty() => (f, Some(m)),
                Some((f, _)) => (f, None),
                None => (a, None),
            },
        };
        let metadata = match metadata {
            None => None,
            Some(m) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(m)
                    .map_err(|e| format!("metadata is not base64: {e}"))?;
                Some(
                    serde_json::from_slice(&raw)
                        .map_err(|e| format!("metadata is not JSON: {e}"))?,
                )
            }
        };
        Ok(InstanceId {
            driver: driver.to_string(),
            service,
            id: id.to_string(),
            fields: form_urlencoded::parse(fields.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .filter(|(k, _)| !k.is_empty())
                .collect(),
            metadata,
        })
    }

    /// The hostname a metadata-only instance id carries (vfs: metadata is a JSON string).
    pub fn hostname(&self) -> Option<&str> {
        self.metadata
            .as_ref()
            .and_then(|m| m.as_str())
            .filter(|h| !h.is_empty())
    }

    /// The id the server resolves this header to (the vfs `InstanceInspect` rule): the
    /// given id, else the hostname from the metadata.
    pub fn resolved_id(&self) -> Option<&str> {
        if !self.id.is_empty() {
            Some(&self.id)
        } else {
            self.hostname()
        }
    }
}

/// Pick the instance id for service `service` with driver `driver`: a header naming the
/// service wins, else one with no service and the same driver (both case-insensitive).
pub fn instance_for<'a>(
    iids: &'a [InstanceId],
    service: &str,
    driver: &str,
) -> Option<&'a InstanceId> {
    iids.iter()
        .find(|i| {
            i.service
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(service))
        })
        .or_else(|| {
            iids.iter()
                .find(|i| i.service.is_none() && i.driver.eq_ignore_ascii_case(driver))
        })
}

/// One `Libstorage-Localdevices` header: `DRIVER=[VOLKEY::DEVPATH[,...]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDevices {
    pub driver: String,
    pub devices: BTreeMap<String, String>,
}

impl LocalDevices {
    pub fn parse(s: &str) -> Result<LocalDevices, String> {
        let (driver, rest) = s
            .split_once('=')
            .ok_or_else(|| "no '=' after the driver name".to_string())?;
        if driver.trim().is_empty() {
            return Err("empty driver name".into());
        }
        let mut devices = BTreeMap::new();
        for pair in rest.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once("::")
                .ok_or_else(|| format!("device entry {pair:?} has no '::'"))?;
            if k.is_empty() {
                return Err(format!("device entry {pair:?} has an empty key"));
            }
            devices.insert(k.to_string(), v.to_string());
        }
        Ok(LocalDevices {
            driver: driver.to_lowercase(),
            devices,
        })
    }
}

/// `Libstorage-Tx: txID=<uuid>, txCR=<epoch seconds>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    pub id: String,
    pub created: u64,
}

impl Tx {
    pub fn parse(s: &str) -> Result<Tx, String> {
        let bad = || format!("expected 'txID=<uuid>, txCR=<seconds>', got {s:?}");
        let (a, b) = s.split_once(',').ok_or_else(bad)?;
        let id = strip_prefix_ci(a.trim(), "txID=").ok_or_else(bad)?;
        let cr = strip_prefix_ci(b.trim_start(), "txCR=").ok_or_else(bad)?;
        if cr.is_empty() || !cr.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        if !looks_like_uuid(id) {
            return Err(format!("txID {id:?} is not a UUID"));
        }
        Ok(Tx {
            id: id.to_string(),
            created: cr.parse().map_err(|_| bad())?,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `8-4-4-4-12` hex digits with a version digit 1-5, as the Go client generates.
fn looks_like_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()))
        && matches!(groups[2].as_bytes()[0], b'1'..=b'5')
}

/// The `attachments` query value (reference §4.4): an integer is the mask; `true` or empty
/// is 15; `false` is 1 (sic); anything else is 0.
pub fn attachment_mask(value: Option<&str>) -> u32 {
    match value {
        None => 0,
        Some("") => 15,
        Some(v) if v.eq_ignore_ascii_case("true") => 15,
        Some(v) if v.eq_ignore_ascii_case("false") => 1,
        Some(v) => v.parse::<i64>().map(|n| n.clamp(0, 31) as u32).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_forms_seen_on_the_wire() {
        let i = InstanceId::parse("vfs=,,InZtIg==").unwrap();
        assert_eq!((i.driver.as_str(), i.service.as_deref()), ("vfs", None));
        assert_eq!(i.id, "");
        assert_eq!(i.metadata, Some(serde_json::json!("vm")));
        assert_eq!(i.resolved_id(), Some("vm"));
        assert_eq!(i.hostname(), Some("vm"));

        let i = InstanceId::parse("vfs:vfs2=vm").unwrap();
        assert_eq!(i.service.as_deref(), Some("vfs2"));
        assert_eq!(i.resolved_id(), Some("vm"));
        assert!(i.fields.is_empty() && i.metadata.is_none());

        let i =
            InstanceId::parse("ebs=i-1234,availabilityZone=us-west-2a&region=us-west-2").unwrap();
        assert_eq!(i.id, "i-1234");
        assert_eq!(i.fields["region"], "us-west-2");
        assert_eq!(i.fields["availabilityZone"], "us-west-2a");

        let i = InstanceId::parse("vfs=abc,zone=a%26b&region=east").unwrap();
        assert_eq!(i.fields["zone"], "a&b");
        assert_eq!(i.fields["region"], "east");
    }

    #[test]
    fn instance_id_garbage_is_refused() {
        for bad in [
            "",
            "novalue",
            "=id",
            ":svc=id",
            "vfs:=id",
            "  :svc=id", // a blank driver is refused with a service too (found by fuzzing)
            "vfs=,,!!notbase64",
            "vfs=,,bm90IGpzb24=", // base64("not json")
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn instance_resolution_prefers_the_named_service() {
        let iids = vec![
            InstanceId::parse("vfs=generic").unwrap(),
            InstanceId::parse("vfs:b=special").unwrap(),
        ];
        assert_eq!(instance_for(&iids, "b", "vfs").unwrap().id, "special");
        assert_eq!(instance_for(&iids, "a", "vfs").unwrap().id, "generic");
        assert!(instance_for(&iids, "a", "ebs").is_none());
        let only_named = vec![InstanceId::parse("vfs:b=x").unwrap()];
        assert!(instance_for(&only_named, "a", "vfs").is_none());
    }

    #[test]
    fn local_devices() {
        let d = LocalDevices::parse("vfs=/dev/xvda::,/dev/xvdb::/x").unwrap();
        assert_eq!(d.driver, "vfs");
        assert_eq!(d.devices["/dev/xvda"], "");
        assert_eq!(d.devices["/dev/xvdb"], "/x");
        assert!(LocalDevices::parse("vfs=").unwrap().devices.is_empty());
        for bad in ["", "vfs", "=/dev/xvda::", "vfs=/dev/xvda", "vfs=::x"] {
            assert!(LocalDevices::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tx_header() {
        let t = Tx::parse("txID=844d24c7-0c83-44ca-4f93-ba4e2d74336a, txCR=1795606038").unwrap();
        assert_eq!(t.created, 1795606038);
        assert!(Tx::parse("txID=844d24c7-0c83-44ca-4f93-ba4e2d74336a,txCR=1").is_ok());
        for bad in [
            "",
            "garbage",
            "txID=844d24c7-0c83-44ca-4f93-ba4e2d74336a",
            "txID=not-a-uuid, txCR=1",
            "txID=844d24c7-0c83-94ca-4f93-ba4e2d74336a, txCR=1",
            "txID=844d24c7-0c83-44ca-4f93-ba4e2d74336a, txCR=x1",
        ] {
            assert!(Tx::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mask_values() {
        assert_eq!(attachment_mask(None), 0);
        assert_eq!(attachment_mask(Some("")), 15);
        assert_eq!(attachment_mask(Some("true")), 15);
        assert_eq!(attachment_mask(Some("false")), 1);
        assert_eq!(attachment_mask(Some("27")), 27);
        assert_eq!(attachment_mask(Some("junk")), 0);
    }
}
