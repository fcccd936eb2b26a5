//! Framework authentication, as a Mesos master's `--authenticate_http_frameworks` does it:
//! HTTP basic credentials per principal (`[[offers.credentials]]`) on every scheduler call,
//! the authenticated principal equal to `FrameworkInfo.principal` when that is set, and a
//! framework id bound (in the store) to the principal that first subscribed with it, so
//! another principal can never take its stream, its statuses or its volumes.
//!
//! On by default whenever the endpoint listens beyond loopback (`offers.authentication =
//! "auto"`); `"required"` turns it on for loopback too, `"off"` leaves the endpoint open.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::config::{Invalid, OffersConfig};
use super::Endpoint;

/// The realm a Mesos master authenticates schedulers in.
pub const REALM: &str = "mesos-master-scheduler";

/// Store meta key prefix binding a framework id to its principal.
const PRINCIPAL_PREFIX: &str = "offers.principal.";

/// `offers.authentication`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// On when credentials are configured or the endpoint listens beyond loopback.
    #[default]
    Auto,
    Required,
    /// Open to anyone who can reach it (the operator's explicit choice).
    Off,
}

/// `[[offers.credentials]]`: one framework principal and its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameworkCredential {
    pub principal: String,
    #[serde(default)]
    pub secret: Option<String>,
    /// A file whose first line is the secret (instead of `secret`).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

/// The principals and secrets checked on every call (when authentication is on).
#[derive(Clone, Default)]
pub struct Authenticator {
    secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("principals", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl OffersConfig {
    /// Whether frameworks must authenticate.
    pub fn authentication_on(&self) -> bool {
        match self.authentication {
            AuthMode::Required => true,
            AuthMode::Off => false,
            AuthMode::Auto => !self.credentials.is_empty() || !self.listen.ip().is_loopback(),
        }
    }

    /// The checks of `authentication` and `credentials` (secret files are read).
    pub(super) fn validate_auth(&self) -> Result<(), Invalid> {
        self.authenticator().map(|_| ())
    }

    /// The authenticator, or `None` when authentication is off.
    pub fn authenticator(&self) -> Result<Option<Authenticator>, Invalid> {
        let mut secrets = BTreeMap::new();
        for c in &self.credentials {
            if c.principal.is_empty() || c.principal.contains(':') || c.principal.len() > 256 {
                return Err(Invalid::Principal(c.principal.clone()));
            }
            let secret = match (&c.secret, &c.secret_file) {
                (Some(s), None) => s.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| Invalid::SecretFile {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
                _ => return Err(Invalid::OneSecret(c.principal.clone())),
            };
            if secret.is_empty() {
                return Err(Invalid::OneSecret(c.principal.clone()));
            }
            if secrets.insert(c.principal.clone(), secret).is_some() {
                return Err(Invalid::PrincipalTwice(c.principal.clone()));
            }
        }
        if !self.authentication_on() {
            return Ok(None);
        }
        if secrets.is_empty() {
            return Err(Invalid::NoCredentials(self.listen));
        }
        Ok(Some(Authenticator { secrets }))
    }
}

/// 401 with the scheduler realm.
pub(super) fn unauthorized(msg: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, format!("Basic realm=\"{REALM}\"")),
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
        ],
        msg.to_string(),
    )
        .into_response()
}

impl Authenticator {
    /// The principal the request's basic credentials prove, or why not (answered 401 with
    /// [`unauthorized`]).
    pub fn check(&self, headers: &HeaderMap) -> Result<String, &'static str> {
        if headers.get(header::AUTHORIZATION).is_none() {
            return Err(
                "Framework authentication is on: send HTTP basic credentials (principal and secret)",
            );
        }
        let Some((principal, secret)) = crate::listener::basic_credentials(headers) else {
            return Err("Malformed 'Authorization' header: expected Basic credentials");
        };
        match self.secrets.get(&principal) {
            Some(s) if crate::listener::secrets_equal(s.as_bytes(), secret.as_bytes()) => {
                Ok(principal)
            }
            _ => Err("Authentication failed: unknown principal or wrong secret"),
        }
    }
}

/// The store meta key binding `framework_id` to its principal.
pub(super) fn binding_key(framework_id: &str) -> String {
    format!("{PRINCIPAL_PREFIX}{framework_id}")
}

impl Endpoint {
    /// The principal a framework id is bound to, if any.
    pub(super) fn bound_principal(
        &self,
        framework_id: &str,
    ) -> Result<Option<String>, crate::store::Error> {
        self.store().meta(&binding_key(framework_id))
    }

    /// Bind `framework_id` to `principal`, durably, before the subscription is answered.
    pub(super) async fn bind_principal(
        &self,
        framework_id: &str,
        principal: &str,
    ) -> Result<(), crate::store::Error> {
        self.store()
            .commit(vec![crate::store::Op::PutMeta(
                binding_key(framework_id),
                principal.to_string(),
            )])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use base64::Engine as _;

    fn cfg(toml_text: &str) -> OffersConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn basic(user: &str, pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        h
    }

    #[test]
    fn on_beyond_loopback_or_with_credentials_unless_turned_off() {
        assert!(!OffersConfig::default().authentication_on());
        assert!(OffersConfig::default().authenticator().unwrap().is_none());
        let open = cfg("listen = \"0.0.0.0:7980\"");
        assert!(open.authentication_on());
        assert_eq!(
            open.authenticator().unwrap_err(),
            Invalid::NoCredentials("0.0.0.0:7980".parse().unwrap())
        );
        let off = cfg("listen = \"0.0.0.0:7980\"\nauthentication = \"off\"");
        assert!(off.authenticator().unwrap().is_none());
        let with = cfg("[[credentials]]\nprincipal = \"spark\"\nsecret = \"pw\"");
        assert!(with.authentication_on());
        let a = with.authenticator().unwrap().unwrap();
        assert_eq!(a.check(&basic("spark", "pw")).unwrap(), "spark");
        for h in [basic("spark", "px"), basic("other", "pw"), HeaderMap::new()] {
            let r = unauthorized(a.check(&h).unwrap_err());
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(
                r.headers()[header::WWW_AUTHENTICATE],
                "Basic realm=\"mesos-master-scheduler\""
            );
        }
        let required = cfg("authentication = \"required\"");
        assert!(matches!(
            required.authenticator(),
            Err(Invalid::NoCredentials(_))
        ));
    }

    #[test]
    fn credentials_are_checked() {
        for bad in [
            "[[credentials]]\nprincipal = \"a:b\"\nsecret = \"x\"",
            "[[credentials]]\nprincipal = \"a\"",
            "[[credentials]]\nprincipal = \"a\"\nsecret = \"\"",
            "[[credentials]]\nprincipal = \"a\"\nsecret = \"x\"\n[[credentials]]\nprincipal = \"a\"\nsecret = \"y\"",
            "[[credentials]]\nprincipal = \"a\"\nsecret_file = \"/nonexistent/secret\"",
        ] {
            assert!(cfg(bad).authenticator().is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "from-file\n").unwrap();
        let c = cfg(&format!(
            "[[credentials]]\nprincipal = \"a\"\nsecret_file = \"{}\"",
            f.display()
        ));
        let a = c.authenticator().unwrap().unwrap();
        assert_eq!(a.check(&basic("a", "from-file")).unwrap(), "a");
    }
}
