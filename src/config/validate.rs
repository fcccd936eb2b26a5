//! The checks on the whole config: each section's own check (in the order Polly has always
//! reported them), and what only the composition can check: service names and their
//! uniqueness, façade settings naming configured services, the driver call timeout, and the
//! listeners not colliding.

use std::collections::BTreeSet;

use super::{Config, Error};

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        if self.services.is_empty() {
            return Err(Error::NoServices);
        }
        let mut seen = BTreeSet::new();
        for s in &self.services {
            // Service names are volume-manager names: the same rule as volume names.
            if !crate::volumes::valid_name(&s.name) {
                return Err(Error::ServiceName(s.name.clone()));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(Error::ServiceTwice(s.name.clone()));
            }
            s.validate(self.driver_timeout_secs)?;
        }
        if self.driver_timeout_secs == 0 {
            return Err(Error::ZeroDriverTimeout);
        }
        for name in self.libstorage.services.keys() {
            if !self.services.iter().any(|s| &s.name == name) {
                return Err(Error::UnknownLibStorageService(name.clone()));
            }
        }
        self.libstorage.validate()?;
        self.mesos.validate()?;
        self.offers.validate()?;
        self.fencing.validate()?;
        self.reconciler.validate()?;
        self.store.validate()?;
        self.ha.validate(self.store.backend)?;
        self.csi.validate(&self.data_dir)?;
        let names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        self.broker.validate(&names)?;
        self.http.validate()?;
        if self.admin.listen == self.libstorage.listen && self.admin.listen.port() != 0 {
            return Err(Error::SharedListener(self.admin.listen));
        }
        Ok(())
    }
}
