//! DECLINE, REVIVE and SUPPRESS: a framework's say over what it is offered, and how long a
//! `Filters.refuse_seconds` keeps an agent out of its offers (DECLINE and ACCEPT).

use super::Endpoint;
use crate::mesos::v1;

impl Endpoint {
    pub(super) fn decline(&self, fw: &str, ids: &[v1::OfferId], filters: Option<&v1::Filters>) {
        let now = crate::volumes::now_ms();
        let until = now + refuse_ms(filters);
        let mut st = self.state();
        let mut agents = Vec::new();
        for id in ids {
            let Some(n) = self.parse_offer_id(&id.value) else {
                continue;
            };
            if let Some(pos) = st
                .outstanding
                .iter()
                .position(|o| o.id == n && o.framework_id == fw)
            {
                agents.push(st.outstanding.remove(pos).agent_id);
            }
        }
        if until > now {
            if let Some(f) = st.frameworks.get_mut(fw) {
                for agent_id in agents {
                    f.refuse(agent_id, until);
                }
            }
        }
        drop(st);
        self.wake();
    }

    /// REVIVE: offers again, filters lifted.
    pub(super) fn revive(&self, fw: &str) {
        let mut st = self.state();
        if let Some(f) = st.frameworks.get_mut(fw) {
            f.suppressed = false;
            f.filters.clear();
        }
        drop(st);
        self.wake();
    }

    /// SUPPRESS: no offers until REVIVE.
    pub(super) fn suppress(&self, fw: &str) {
        if let Some(f) = self.state().frameworks.get_mut(fw) {
            f.suppressed = true;
        }
    }
}

/// The default of `Filters.refuse_seconds`.
const DEFAULT_REFUSE_SECS: f64 = 5.0;

/// How long, in ms, a DECLINE's or ACCEPT's `filters` keep the agent out of this framework's
/// offers. As a Mesos master does: absent means the default 5 s; a value that is negative,
/// not a number, infinite or beyond what a duration can hold (i64 nanoseconds) is replaced
/// by the default, with a warning, rather than read as "no filter" or "forever".
pub(super) fn refuse_ms(filters: Option<&v1::Filters>) -> u64 {
    let Some(secs) = filters.and_then(|f| f.refuse_seconds) else {
        return (DEFAULT_REFUSE_SECS * 1000.0) as u64;
    };
    let max_secs = i64::MAX as f64 / 1e9;
    let secs = if secs.is_finite() && (0.0..=max_secs).contains(&secs) {
        secs
    } else {
        tracing::warn!(
            refuse_seconds = secs,
            "invalid Filters.refuse_seconds; using the default of 5 s"
        );
        DEFAULT_REFUSE_SECS
    };
    (secs * 1000.0) as u64
}

#[cfg(test)]
mod refuse_tests {
    use super::*;

    fn ms(secs: Option<f64>) -> u64 {
        refuse_ms(Some(&v1::Filters {
            refuse_seconds: secs,
        }))
    }

    #[test]
    fn refuse_seconds_as_a_mesos_master_reads_it() {
        assert_eq!(refuse_ms(None), 5_000);
        assert_eq!(ms(None), 5_000);
        assert_eq!(ms(Some(0.0)), 0);
        assert_eq!(ms(Some(0.25)), 250);
        assert_eq!(ms(Some(3600.0)), 3_600_000);
        // A year and more is honoured (no silent cap).
        assert_eq!(ms(Some(4e8)), 400_000_000_000);
        for bad in [
            -1.0,
            -0.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
        ] {
            assert_eq!(ms(Some(bad)), 5_000, "{bad}");
        }
    }
}
