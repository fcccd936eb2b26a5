//! Restrictions: which services and Mesos frameworks may see and use a volume.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Manager, Result};
use crate::store::Volume;

/// Restriction changes; empty sets change nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restriction {
    #[serde(default)]
    pub services: BTreeSet<String>,
    #[serde(default)]
    pub frameworks: BTreeSet<String>,
}

impl Manager {
    /// Add restrictions (the volume becomes visible only to these services / frameworks).
    pub async fn restrict(&self, id: &str, r: &Restriction) -> Result<Volume> {
        for s in &r.services {
            self.service(s)?;
        }
        self.update(id, |v| {
            v.restrict_services.extend(r.services.iter().cloned());
            v.restrict_frameworks.extend(r.frameworks.iter().cloned());
            Ok(())
        })
        .await
    }

    /// Remove restrictions; with both sets empty, remove them all.
    pub async fn unrestrict(&self, id: &str, r: &Restriction) -> Result<Volume> {
        self.update(id, |v| {
            if r.services.is_empty() && r.frameworks.is_empty() {
                v.restrict_services.clear();
                v.restrict_frameworks.clear();
            }
            v.restrict_services.retain(|s| !r.services.contains(s));
            v.restrict_frameworks.retain(|f| !r.frameworks.contains(f));
            Ok(())
        })
        .await
    }
}
