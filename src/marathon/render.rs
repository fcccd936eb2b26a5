//! The human form of a [`Report`] and of a provision outcome: a table of volumes, then
//! problems, warnings, planned actions and a one-line verdict.

use std::fmt::Write;

use super::{Action, ProvisionOutcome, Report, VolumeState};
use crate::client::human_size;

fn dash(o: &Option<String>) -> String {
    o.clone().unwrap_or_else(|| "-".into())
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let all = std::iter::once(headers.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().cloned());
    for r in all {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn state(s: VolumeState) -> &'static str {
    match s {
        VolumeState::Exists => "exists",
        VolumeState::ToCreate => "to create",
        VolumeState::Offered => "offered by polly",
        VolumeState::NotPolly => "not polly's",
        VolumeState::Unresolved => "unresolved",
    }
}

/// The report of `polly marathon check`.
pub fn report(source: &str, r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{source}: {} app(s), {} volume(s)\n",
        r.apps.len(),
        r.volumes.len()
    );
    let rows: Vec<Vec<String>> = r
        .volumes
        .iter()
        .map(|v| {
            vec![
                v.app.clone(),
                v.container_path.clone(),
                format!("{:?}", v.kind).to_lowercase(),
                dash(&v.name),
                dash(&v.service),
                dash(&v.pool),
                dash(&v.zone),
                v.size_bytes.map(human_size).unwrap_or_else(|| "-".into()),
                state(v.state).into(),
                dash(&v.claimed_by),
            ]
        })
        .collect();
    out += &table(
        &[
            "APP", "PATH", "KIND", "VOLUME", "SERVICE", "POOL", "ZONE", "SIZE", "STATE", "CLAIM",
        ],
        &rows,
    );
    for (title, list) in [("problems", &r.problems), ("warnings", &r.warnings)] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        for f in list {
            let rule = serde_json::to_value(f.rule)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let vol = f
                .volume
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {}{vol} [{rule}]: {}", f.app, f.message);
        }
    }
    if !r.actions.is_empty() {
        let _ = writeln!(out, "\npolly marathon provision would:");
        for a in &r.actions {
            let _ = writeln!(out, "  {}", action(a));
        }
    }
    let verdict = if r.ok {
        "OK: deployable".to_string()
    } else {
        format!("FAIL: {} problem(s)", r.problems.len())
    };
    let _ = writeln!(out, "\nverdict: {verdict}");
    out
}

fn action(a: &Action) -> String {
    match a {
        Action::Create { app, volume } => format!(
            "create {}/{} ({}, pool {}, zone {}, {}) restricted to service {}{}",
            volume.service,
            volume.name,
            human_size(volume.size_bytes),
            dash(&volume.pool),
            dash(&volume.zone),
            serde_json::to_value(volume.access_mode)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            volume.service,
            if volume.labels.contains_key(super::CLAIM_LABEL) {
                format!(", claimed by {app}")
            } else {
                format!(" (shared, used by {app}; not claimed)")
            }
        ),
        Action::Claim {
            app,
            volume_id,
            service,
            name,
        } => format!("label {service}/{name} ({volume_id}) with marathon.app={app}"),
    }
}

/// The outcome of `polly marathon provision`.
pub fn outcome(o: &ProvisionOutcome) -> String {
    let mut out = String::new();
    for v in &o.created {
        let _ = writeln!(
            out,
            "created {}/{} ({}, {}, pool {}, zone {})",
            v.service,
            v.name,
            v.id,
            human_size(v.size_bytes),
            dash(&v.pool),
            dash(&v.zone)
        );
    }
    for v in &o.claimed {
        let _ = writeln!(out, "claimed {}/{} ({})", v.service, v.name, v.id);
    }
    for c in &o.conflicts {
        let _ = writeln!(out, "conflict: {c}");
    }
    if o.created.is_empty() && o.claimed.is_empty() && o.conflicts.is_empty() {
        out += "nothing to do: every volume exists and is claimed\n";
    } else {
        let _ = writeln!(
            out,
            "{} created, {} claimed, {} conflict(s)",
            o.created.len(),
            o.claimed.len(),
            o.conflicts.len()
        );
    }
    out
}
