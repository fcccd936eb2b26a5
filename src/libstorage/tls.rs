//! TLS on the façade listener: the rustls server config built (with the ring provider) from
//! `[libstorage.tls]` PEM files, once at start-up so a bad file is a config error.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

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
