//! JWT bearer authentication on the façade (reference §3): policies built once from
//! `[libstorage.auth]` and `[libstorage.services.<name>.auth]`, and the two middlewares that
//! apply them (global: every route; per service: routes naming that service and the
//! all-services routes), and the [`Caller`] every route learns from them: the subject of an
//! admitted token and the services whose policy refuses the caller, which the views use to keep
//! a guarded service's volumes and a caller's tasks from everyone else. Every refusal is the
//! reference's 401 `invalid security token`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

use super::config::{AuthConfig, LibStorageConfig};
use super::LsError;

/// Every façade auth policy. The default checks nothing.
#[derive(Default)]
pub struct Auth {
    global: Option<Policy>,
    services: BTreeMap<String, Policy>,
}

/// One scope's verifier: key, algorithm, and the subjects let in or kept out (lower case).
pub struct Policy {
    key: DecodingKey,
    validation: Validation,
    allow: Vec<String>,
    deny: Vec<String>,
}

/// The claims a token must carry; a missing one fails deserialization.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[allow(dead_code)] // required to be present, value unused
    iat: f64,
    #[allow(dead_code)]
    exp: f64,
    #[allow(dead_code)]
    nbf: f64,
}

impl Auth {
    /// Build every policy; the error is one line naming the config key at fault.
    pub fn from_config(ls: &LibStorageConfig) -> Result<Auth, String> {
        let global = ls.auth.as_ref();
        let mut auth = Auth {
            global: match global {
                Some(g) => Policy::build("libstorage.auth", g, None)?,
                None => None,
            },
            services: BTreeMap::new(),
        };
        for (name, s) in &ls.services {
            if let Some(a) = &s.auth {
                let scope = format!("libstorage.services.{name}.auth");
                if let Some(p) = Policy::build(&scope, a, global)? {
                    auth.services.insert(name.clone(), p);
                }
            }
        }
        Ok(auth)
    }

    /// Whether any policy is on.
    pub fn is_on(&self) -> bool {
        self.global.is_some() || !self.services.is_empty()
    }

    /// Who sends `headers`: the subject of the token the global policy admits, else of the
    /// first service policy (by name) that admits it; and every service whose policy does not.
    pub fn caller(&self, headers: &HeaderMap) -> Caller {
        let mut subject = self.global.as_ref().and_then(|p| p.subject(headers));
        let mut refused = BTreeSet::new();
        for (name, p) in &self.services {
            match p.subject(headers) {
                Some(s) => {
                    subject.get_or_insert(s);
                }
                None => {
                    refused.insert(name.clone());
                }
            }
        }
        Caller { subject, refused }
    }
}

/// Who is calling, as the policies see it. A service with its own policy is a tenant: its
/// volumes (restricted or not), and the snapshots of those, are out of reach of a caller its
/// policy refuses, through every route, the routes naming another service included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The subject (lower case) of a token a policy admits; `None` without one.
    pub subject: Option<String>,
    /// Services whose own policy refuses this caller.
    refused: BTreeSet<String>,
}

impl Caller {
    /// Whether this caller may see and change what belongs to `service`.
    pub fn may_use(&self, service: &str) -> bool {
        !self.refused.contains(service)
    }

    /// What this caller may not see, as text: callers with the same key see the same volumes
    /// (the key of cached list bodies).
    pub fn scope_key(&self) -> String {
        self.refused.iter().cloned().collect::<Vec<_>>().join(",")
    }
}

impl Policy {
    /// `None` when `allow` is empty (auth off in this scope). `inherit` supplies `key` and
    /// `alg` a service scope leaves unset.
    fn build(
        scope: &str,
        own: &AuthConfig,
        inherit: Option<&AuthConfig>,
    ) -> Result<Option<Policy>, String> {
        let pick = |f: fn(&AuthConfig) -> &Option<String>| {
            f(own)
                .as_deref()
                .or_else(|| inherit.and_then(|g| f(g).as_deref()))
                .filter(|v| !v.is_empty())
        };
        let alg_name = pick(|a| &a.alg).unwrap_or("HS256");
        let alg: Algorithm = alg_name.parse().map_err(|_| {
            format!(
                "{scope}.alg {alg_name:?} is not one of HS256, HS384, HS512, RS256, RS384, \
                 RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
            )
        })?;
        let key = match pick(|a| &a.key) {
            Some(k) => Some(decoding_key(scope, k, alg)?),
            None => None,
        };
        if own.allow.is_empty() {
            if !own.deny.is_empty() {
                return Err(format!(
                    "{scope}: deny without allow turns nothing on; add allow (the subjects let in)"
                ));
            }
            return Ok(None);
        }
        let key = key.ok_or_else(|| {
            format!("{scope}: allow is set but no key: set key (HMAC secret, PEM key or key file)")
        })?;
        let subjects = |list: &[String], what: &str| -> Result<Vec<String>, String> {
            list.iter()
                .map(|e| subject_of(e).map_err(|why| format!("{scope}.{what}: {why}")))
                .collect()
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        Ok(Some(Policy {
            key,
            validation,
            allow: subjects(&own.allow, "allow")?,
            deny: subjects(&own.deny, "deny")?,
        }))
    }

    /// Whether the request's bearer token passes this policy.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        self.subject(headers).is_some()
    }

    /// The subject (lower case) of the request's bearer token when it passes this policy.
    fn subject(&self, headers: &HeaderMap) -> Option<String> {
        let token = bearer(headers)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).ok()?;
        let sub = data.claims.sub.to_lowercase();
        (!self.deny.contains(&sub) && self.allow.contains(&sub)).then_some(sub)
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The key material: a file's contents when the value is (or looks like) a path, else the
/// value itself; then a decoding key of `alg`'s family.
fn decoding_key(scope: &str, value: &str, alg: Algorithm) -> Result<DecodingKey, String> {
    let path = Path::new(value);
    let looks_like_path = ["/", "./", "../"].iter().any(|p| value.starts_with(p));
    let (bytes, from_file) = if path.is_file() || looks_like_path {
        let b = std::fs::read(path)
            .map_err(|e| format!("{scope}.key: cannot read key file {value}: {e}"))?;
        (b, true)
    } else {
        (value.as_bytes().to_vec(), false)
    };
    let family = alg.family();
    let bad_pem =
        |e: jsonwebtoken::errors::Error| format!("{scope}.key: not a {alg:?} PEM public key: {e}");
    match family {
        AlgorithmFamily::Hmac => {
            let mut b = bytes;
            if from_file {
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
            }
            if b.is_empty() {
                return Err(format!("{scope}.key: the HMAC key is empty"));
            }
            Ok(DecodingKey::from_secret(&b))
        }
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&bytes).map_err(bad_pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&bytes).map_err(bad_pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&bytes).map_err(bad_pem),
    }
}

/// The subject of an allow/deny entry: `tag:<JWT>` or a whole JWT yields its `sub` claim
/// (read, not verified: the entry is configuration, not a credential); anything else is
/// the subject itself. Lower case, for case-insensitive comparison.
fn subject_of(entry: &str) -> Result<String, String> {
    let entry = entry.trim();
    if let Some(jwt) = entry.strip_prefix("tag:") {
        return jwt_subject(jwt).ok_or_else(|| format!("{entry:?} is not tag:<JWT with sub>"));
    }
    if entry.is_empty() {
        return Err("an entry is empty".into());
    }
    Ok(jwt_subject(entry).unwrap_or_else(|| entry.to_lowercase()))
}

/// `sub` of a compact JWS (`header.payload.signature`), when `s` is one.
fn jwt_subject(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[0].trim_end_matches('=')).ok()?).ok()?;
    header.get("alg")?;
    let payload: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1].trim_end_matches('=')).ok()?).ok()?;
    Some(payload.get("sub")?.as_str()?.to_lowercase())
}

/// Middleware over the whole router: the global policy, on every request.
pub(super) async fn check_global(
    State(auth): State<Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    match &auth.global {
        Some(p) if !p.admits(req.headers()) => LsError::invalid_token().into_response(),
        _ => next.run(req).await,
    }
}

/// Route middleware: the policy of the service a route names, or of every service on the
/// all-services routes. Runs before `?async` so a refused request never becomes a task.
/// Hands the [`Caller`] to the handlers (and to `?async`, whose tasks belong to it).
pub(super) async fn check_service(
    State(auth): State<Arc<Auth>>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = auth.caller(req.headers());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let admitted = match params {
        // A path parameter that is not UTF-8: refuse rather than guess which service.
        Err(_) => auth.services.is_empty(),
        Ok(params) => match params.iter().find(|(k, _)| *k == "service") {
            Some((_, svc)) => caller.may_use(svc),
            None if ["/services", "/volumes", "/snapshots"].contains(&route.as_str()) => {
                caller.refused.is_empty()
            }
            None => true,
        },
    };
    if admitted {
        req.extensions_mut().insert(Arc::new(caller));
        next.run(req).await
    } else {
        LsError::invalid_token().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn hs(alg: Algorithm, key: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    }

    fn claims(sub: &str) -> serde_json::Value {
        json!({"sub": sub, "iat": now(), "nbf": now(), "exp": now() + 60})
    }

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    fn policy(alg: Option<&str>, key: &str, allow: &[&str], deny: &[&str]) -> Policy {
        let c = AuthConfig {
            key: Some(key.into()),
            alg: alg.map(String::from),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        Policy::build("t", &c, None).unwrap().unwrap()
    }

    #[test]
    fn hmac_algorithms_and_alg_mismatch() {
        for (name, alg) in [
            ("HS256", Algorithm::HS256),
            ("HS384", Algorithm::HS384),
            ("HS512", Algorithm::HS512),
        ] {
            let p = policy(Some(name), "k", &["a"], &[]);
            assert!(p.admits(&headers(&hs(alg, "k", claims("a")))), "{name}");
            let other = if alg == Algorithm::HS256 {
                Algorithm::HS512
            } else {
                Algorithm::HS256
            };
            assert!(!p.admits(&headers(&hs(other, "k", claims("a")))), "{name}");
        }
    }

    #[test]
    fn es256_with_a_pem_public_key() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let p = policy(Some("ES256"), &kp.public_key_pem(), &["a"], &[]);
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let t = encode(&Header::new(Algorithm::ES256), &claims("a"), &enc).unwrap();
        assert!(p.admits(&headers(&t)));
        assert!(!p.admits(&headers(&hs(Algorithm::HS256, "k", claims("a")))));
    }

    #[test]
    fn allow_and_deny_entries_take_three_forms() {
        let bob = hs(Algorithm::HS256, "other", claims("Bob"));
        let carol = hs(Algorithm::HS256, "other", claims("carol"));
        let p = policy(
            None,
            "k",
            &["ALICE", "bob", &carol],
            &[&format!("tag:{bob}")],
        );
        let ok = |sub: &str| p.admits(&headers(&hs(Algorithm::HS256, "k", claims(sub))));
        assert!(ok("alice"));
        assert!(ok("Carol"));
        assert!(!ok("bob"), "deny wins over allow");
        assert!(!ok("dave"));
    }

    #[test]
    fn bad_configs_are_one_line_errors() {
        let build = |c: AuthConfig| Policy::build("s", &c, None).map(|p| p.is_some());
        let allow = vec!["a".to_string()];
        let e = build(AuthConfig {
            key: Some("k".into()),
            alg: Some("HS999".into()),
            allow: allow.clone(),
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(e.contains("s.alg") && !e.contains('\n'), "{e}");
        let e = build(AuthConfig {
            allow: allow.clone(),
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(e.contains("no key"), "{e}");
        let e = build(AuthConfig {
            key: Some("/nonexistent/polly.key".into()),
            allow: allow.clone(),
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(
            e.contains("cannot read key file /nonexistent/polly.key"),
            "{e}"
        );
        let e = build(AuthConfig {
            key: Some("k".into()),
            alg: Some("RS256".into()),
            allow: allow.clone(),
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(e.contains("PEM"), "{e}");
        let e = build(AuthConfig {
            key: Some("k".into()),
            deny: allow.clone(),
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(e.contains("deny without allow"), "{e}");
        // No allow: off, even with a key.
        assert!(!build(AuthConfig {
            key: Some("k".into()),
            ..AuthConfig::default()
        })
        .unwrap());
    }

    #[test]
    fn a_service_inherits_the_global_key_and_alg() {
        let global = AuthConfig {
            key: Some("g".into()),
            alg: Some("HS384".into()),
            ..AuthConfig::default()
        };
        let own = AuthConfig {
            allow: vec!["a".into()],
            ..AuthConfig::default()
        };
        let p = Policy::build("s", &own, Some(&global)).unwrap().unwrap();
        assert!(p.admits(&headers(&hs(Algorithm::HS384, "g", claims("a")))));
        assert!(!p.admits(&headers(&hs(Algorithm::HS256, "g", claims("a")))));
    }
}
