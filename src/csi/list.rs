//! Paging for ListVolumes and ListSnapshots. Entries are sorted by id; a page's next token
//! is the id of the first entry it left out, and a page starts at the first id at or after
//! its token, so volumes created or deleted between pages never shift the rest. A token
//! that is not an id Polly could have given is ABORTED, as the specification says.

use super::error::{CsiError, Result};
use super::v1;
use super::{csi_volume, published_nodes, Csi};
use crate::store::VolumeStatus;

/// One page of `items` (sorted by `key`): at most `max` (0: all) from `token` on, and the
/// next token ("" when nothing is left).
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    max: i32,
    token: &str,
) -> Result<(Vec<T>, String)> {
    let max = usize::try_from(max)
        .map_err(|_| CsiError::Invalid(format!("max_entries {max} must not be negative")))?;
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|i| token.is_empty() || key(i) >= token)
        .collect();
    if max == 0 || rest.len() <= max {
        return Ok((rest, String::new()));
    }
    let next = key(&rest[max]).to_string();
    rest.truncate(max);
    Ok((rest, next))
}

/// Whether `t` is a Polly volume id (`pv-` and 32 hex digits).
fn is_volume_id(t: &str) -> bool {
    t.strip_prefix("pv-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn bad_token(t: &str) -> CsiError {
    CsiError::Aborted(format!(
        "starting_token {t:?} is not a token this polly gave; list again without one"
    ))
}

impl Csi {
    pub(super) fn list_volumes(
        &self,
        req: v1::ListVolumesRequest,
    ) -> Result<v1::ListVolumesResponse> {
        let token = req.starting_token.as_str();
        if !token.is_empty() && !is_volume_id(token) {
            return Err(bad_token(token));
        }
        let m = &self.manager;
        let mut vols: Vec<_> = m
            .volumes()
            .map_err(|e| CsiError::volume(e, super::error::Conflict::Pending))?
            .into_iter()
            .filter(|v| v.status == VolumeStatus::Available)
            .collect();
        vols.sort_by(|a, b| a.id.cmp(&b.id));
        let (vols, next_token) = page(vols, |v| v.id.as_str(), req.max_entries, token)?;
        Ok(v1::ListVolumesResponse {
            entries: vols
                .iter()
                .map(|v| v1::list_volumes_response::Entry {
                    volume: Some(csi_volume(m, v)),
                    status: Some(v1::list_volumes_response::VolumeStatus {
                        published_node_ids: published_nodes(v),
                        volume_condition: None,
                    }),
                })
                .collect(),
            next_token,
        })
    }

    pub(super) async fn list_snapshots(
        &self,
        req: v1::ListSnapshotsRequest,
    ) -> Result<v1::ListSnapshotsResponse> {
        let token = req.starting_token.as_str();
        if !token.is_empty()
            && super::snapshots::split_id(token)
                .is_none_or(|(svc, _)| self.manager.service(svc).is_err())
        {
            return Err(bad_token(token));
        }
        let mut snaps: Vec<(String, v1::Snapshot)> = self
            .snapshots()
            .await?
            .into_iter()
            .map(|s| {
                (
                    super::snapshots::csi_id(&s),
                    super::snapshots::csi_snapshot(&s),
                )
            })
            .filter(|(id, s)| {
                (req.snapshot_id.is_empty() || *id == req.snapshot_id)
                    && (req.source_volume_id.is_empty()
                        || s.source_volume_id == req.source_volume_id)
            })
            .collect();
        snaps.sort_by(|a, b| a.0.cmp(&b.0));
        let (snaps, next_token) = page(snaps, |(id, _)| id.as_str(), req.max_entries, token)?;
        Ok(v1::ListSnapshotsResponse {
            entries: snaps
                .into_iter()
                .map(|(_, s)| v1::list_snapshots_response::Entry { snapshot: Some(s) })
                .collect(),
            next_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_resume_at_their_token() {
        let items: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
        let (p, next) = page(items.clone(), |s| s, 2, "").unwrap();
        assert_eq!((p, next.as_str()), (vec!["k0".into(), "k1".into()], "k2"));
        let (p, next) = page(items.clone(), |s| s, 2, "k2").unwrap();
        assert_eq!((p, next.as_str()), (vec!["k2".into(), "k3".into()], "k4"));
        let (p, next) = page(items.clone(), |s| s, 2, "k4").unwrap();
        assert_eq!((p.len(), next.as_str()), (1, ""));
        // An entry gone since the token was given does not stop the listing.
        let (p, _) = page(items.clone(), |s| s, 0, "k1a").unwrap();
        assert_eq!(p.len(), 3);
        assert!(page(items, |s| s, -1, "").is_err());
        assert!(is_volume_id("pv-0123456789abcdef0123456789abcdef"));
        assert!(!is_volume_id("invalid-token"));
    }
}
