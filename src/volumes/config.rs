//! `[reconciler]`: how often the background pass resolves intents and compares every
//! back-end's inventory with the store, with the section's default and its own check.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[reconciler]`: the background pass that resolves intents and compares every back-end's
/// inventory with the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcilerConfig {
    /// Seconds between passes. Default 30.
    pub interval_secs: f64,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            interval_secs: 30.0,
        }
    }
}

/// What is wrong with `[reconciler]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReconcilerConfigError {
    #[error("{name} must be a positive number of seconds, not {value}")]
    NotPositiveSecs { name: &'static str, value: f64 },
}

impl ReconcilerConfig {
    pub fn validate(&self) -> Result<(), ReconcilerConfigError> {
        let value = self.interval_secs;
        if value.is_finite() && value > 0.0 && value < 1e9 {
            Ok(())
        } else {
            Err(ReconcilerConfigError::NotPositiveSecs {
                name: "reconciler.interval_secs",
                value,
            })
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_check() {
        let c: ReconcilerConfig = toml::from_str("").unwrap();
        assert_eq!(c.interval(), Duration::from_secs(30));
        c.validate().unwrap();
        let c: ReconcilerConfig = toml::from_str("interval_secs = 0.5").unwrap();
        assert_eq!(c.interval(), Duration::from_millis(500));
        for bad in [
            "interval_secs = 0",
            "interval_secs = -3",
            "interval_secs = 1e9",
        ] {
            let c: ReconcilerConfig = toml::from_str(bad).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.starts_with(
                    "reconciler.interval_secs must be a positive number of seconds, not "
                ),
                "{bad}: {e}"
            );
        }
        assert!(toml::from_str::<ReconcilerConfig>("interval = 3").is_err());
    }
}
