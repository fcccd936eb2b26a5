//! Labels on volumes: adding, removing, and the rules for keys and values.

use std::collections::BTreeMap;

use super::{valid_name, Error, Manager, Result};
use crate::store::Volume;

impl Manager {
    pub async fn label(&self, id: &str, labels: &BTreeMap<String, String>) -> Result<Volume> {
        check_labels(labels)?;
        self.update(id, |v| {
            v.labels
                .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(())
        })
        .await
    }

    pub async fn unlabel(&self, id: &str, keys: &[String]) -> Result<Volume> {
        self.update(id, |v| {
            v.labels.retain(|k, _| !keys.contains(k));
            Ok(())
        })
        .await
    }
}

pub(super) fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        if !valid_name(k) {
            return Err(Error::InvalidArgument(format!(
                "label key {k:?} must be 1-128 letters, digits, '.', '_' or '-'"
            )));
        }
        // Characters, as JSON Schema's maxLength (the admin OpenAPI document) counts them;
        // at most 4 KiB.
        if v.chars().count() > 1024 {
            return Err(Error::InvalidArgument(format!(
                "label {k:?}: value longer than 1024 characters"
            )));
        }
    }
    Ok(())
}
