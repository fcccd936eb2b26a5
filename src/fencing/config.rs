//! `[fencing]`: when an agent counts as lost and when its attachments are released, with
//! the section's defaults and its own checks.

use serde::{Deserialize, Serialize};

/// `[fencing]`: when an agent counts as lost and when its attachments are released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FencingConfig {
    /// An agent lost this long is fenced automatically (its attachments force-detached).
    /// Default: none (off): only an operator's `polly agent fence` releases them, because a
    /// node that merely stopped talking may still be writing to its volumes.
    pub auto_release_after_secs: Option<f64>,
    /// A REX-Ray instance that reported nothing for this long counts as lost. Default: none
    /// (off): REX-Ray clients call only when they mount or list, so silence alone is no sign
    /// of a dead node unless something on the node calls regularly.
    pub instance_lost_after_secs: Option<f64>,
    /// How often lost agents are looked for, auto-release timers checked and interrupted
    /// fences resumed. Default 5.
    pub check_interval_secs: f64,
}

impl Default for FencingConfig {
    fn default() -> Self {
        FencingConfig {
            auto_release_after_secs: None,
            instance_lost_after_secs: None,
            check_interval_secs: 5.0,
        }
    }
}

/// What is wrong with `[fencing]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FencingConfigError {
    #[error("{name} must be a positive number of seconds, not {value}")]
    NotPositiveSecs { name: &'static str, value: f64 },
}

impl FencingConfig {
    pub fn validate(&self) -> Result<(), FencingConfigError> {
        positive_secs("fencing.check_interval_secs", self.check_interval_secs)?;
        if let Some(v) = self.auto_release_after_secs {
            positive_secs("fencing.auto_release_after_secs", v)?;
        }
        if let Some(v) = self.instance_lost_after_secs {
            positive_secs("fencing.instance_lost_after_secs", v)?;
        }
        Ok(())
    }
}

fn positive_secs(name: &'static str, value: f64) -> Result<(), FencingConfigError> {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Ok(())
    } else {
        Err(FencingConfigError::NotPositiveSecs { name, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_times_must_be_positive() {
        let c: FencingConfig = toml::from_str("").unwrap();
        assert_eq!(c, FencingConfig::default());
        assert_eq!(c.auto_release_after_secs, None);
        assert_eq!(c.instance_lost_after_secs, None);
        assert_eq!(c.check_interval_secs, 5.0);
        c.validate().unwrap();
        for (bad, why) in [
            (
                "check_interval_secs = 0",
                "fencing.check_interval_secs must be a positive number of seconds, not 0",
            ),
            (
                "auto_release_after_secs = -1",
                "fencing.auto_release_after_secs must be a positive number of seconds, not -1",
            ),
            (
                "instance_lost_after_secs = 1e10",
                "fencing.instance_lost_after_secs must be a positive number of seconds, not 10000000000",
            ),
        ] {
            let c: FencingConfig = toml::from_str(bad).unwrap();
            assert_eq!(c.validate().unwrap_err().to_string(), why, "{bad}");
        }
        assert!(toml::from_str::<FencingConfig>("auto_release_secs = 1").is_err());
    }
}
