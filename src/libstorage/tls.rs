//! TLS on the façade listener: the rustls server config built (with the ring provider) from
//! `[libstorage.tls]` PEM files, once at start-up so a bad file is a config error.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::TlsConfig;

/// The server config for `[libstorage.tls]`; the error is one line naming the file.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert = cfg.cert_file.display();
    let certs = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("libstorage.tls.cert_file {cert}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "libstorage.tls.cert_file {cert}: no PEM certificate in the file"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| format!("libstorage.tls.key_file {}: {e}", cfg.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("libstorage.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("libstorage.tls: certificate and key do not fit: {e}"))?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}

/// The client config a follower uses to forward libStorage calls to a leader that serves
/// the façade over TLS: it trusts the certificates in `ca_file` (`[ha] leader_ca_file`),
/// else those of this instance's own `cert_file`, and checks that the leader's certificate
/// names the host the leader advertises. The error is one line naming the file.
pub fn leader_client_config(
    own: Option<&TlsConfig>,
    ca_file: Option<&Path>,
) -> Result<Option<rustls::ClientConfig>, String> {
    let (path, key) = match (ca_file, own) {
        (Some(p), _) => (p, "ha.leader_ca_file"),
        (None, Some(t)) => (t.cert_file.as_path(), "libstorage.tls.cert_file"),
        (None, None) => return Ok(None),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "{key} {}: no usable PEM certificate to trust the leader's façade with",
            path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cc = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{key}: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(cc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_follower_trusts_for_the_leader() {
        assert!(leader_client_config(None, None).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = leader_client_config(None, Some(&missing)).unwrap_err();
        assert!(
            e.starts_with("ha.leader_ca_file") && e.contains("missing.pem"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = leader_client_config(None, Some(&empty)).unwrap_err();
        assert!(e.contains("no usable PEM certificate"), "{e}");
        let ck = rcgen::generate_simple_self_signed(vec!["polly-1".to_string()]).unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        let own = TlsConfig {
            cert_file: cert.clone(),
            key_file: dir.path().join("key.pem"),
        };
        // The instance's own certificate by default; leader_ca_file wins over it.
        assert!(leader_client_config(Some(&own), None).unwrap().is_some());
        let e = leader_client_config(Some(&own), Some(&empty)).unwrap_err();
        assert!(e.starts_with("ha.leader_ca_file"), "{e}");
    }
}
