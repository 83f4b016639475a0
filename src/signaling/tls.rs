//! HTTPS for the HTTP/WebSocket/WHIP listener (rustls with the *ring* provider that the
//! WebRTC stack already builds): a certificate chain and key from PEM files, or with
//! `tls_self_signed` a certificate made at start for `localhost`, the loopback addresses
//! and the listen address — enough for a LAN test (browsers give camera access only on
//! localhost or HTTPS), never for production.

use crate::config::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading TLS certificate {path}: {message}")]
    Cert { path: String, message: String },
    #[error("reading TLS key {path}: {message}")]
    Key { path: String, message: String },
    #[error("making a self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A TLS client (RTMPS pushes, HTTPS webhooks) trusting the system's CA bundle (Debian
/// `ca-certificates`) and, if given, the PEM certificates in `extra_ca` (a private CA).
pub fn client_connector(
    extra_ca: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(certs) = CertificateDer::pem_file_iter("/etc/ssl/certs/ca-certificates.crt") {
        for c in certs.flatten() {
            let _ = roots.add(c);
        }
    }
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| TlsError::Cert {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        for c in certs {
            roots.add(c).map_err(|e| TlsError::Cert {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The server's TLS settings, or `None` for plain HTTP.
pub fn server_config(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let (chain, key) = match (&config.tls_cert, &config.tls_key, config.tls_self_signed) {
        (Some(cert), Some(key), _) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| TlsError::Cert {
                    path: cert.display().to_string(),
                    message: e.to_string(),
                })?;
            if chain.is_empty() {
                return Err(TlsError::Cert {
                    path: cert.display().to_string(),
                    message: "no CERTIFICATE block".into(),
                });
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
                path: key.display().to_string(),
                message: e.to_string(),
            })?;
            (chain, key)
        }
        (_, _, true) => self_signed(config)?,
        _ => return Ok(None),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(tls)))
}

/// The certificate chain and key as PEM (for listeners configured with PEM, such as SIP
/// over TLS): the configured files, or a self-signed certificate made now. `None` without
/// certificate options.
pub fn pem_pair(config: &Config) -> Result<Option<(Vec<u8>, Vec<u8>)>, TlsError> {
    match (&config.tls_cert, &config.tls_key, config.tls_self_signed) {
        (Some(cert), Some(key), _) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| TlsError::Cert {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })
            };
            Ok(Some((read(cert)?, read(key)?)))
        }
        (_, _, true) => {
            let (chain, key) = self_signed(config)?;
            let pem = |label: &str, der: &[u8]| {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD.encode(der);
                let mut out = format!("-----BEGIN {label}-----\n");
                for line in b64.as_bytes().chunks(64) {
                    out.push_str(std::str::from_utf8(line).unwrap_or_default());
                    out.push('\n');
                }
                out.push_str(&format!("-----END {label}-----\n"));
                out.into_bytes()
            };
            Ok(Some((
                chain.iter().flat_map(|c| pem("CERTIFICATE", c)).collect(),
                pem("PRIVATE KEY", key.secret_der()),
            )))
        }
        _ => Ok(None),
    }
}

fn self_signed(
    config: &Config,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    let ip = config.listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    if let Some(p) = config.public_ip {
        names.push(p.to_string());
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    Ok((vec![certified.cert.der().clone()], key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_and_pem_files_load_and_bad_files_are_named() {
        let c = Config {
            tls_self_signed: true,
            ..Default::default()
        };
        assert!(server_config(&c).unwrap().is_some());
        assert!(server_config(&Config::default()).unwrap().is_none());
        // The same certificate written as PEM loads from files.
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("tessera-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let c = Config {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
            ..Default::default()
        };
        assert!(server_config(&c).unwrap().is_some());
        let swapped = Config {
            tls_cert: Some(key),
            tls_key: Some(cert),
            ..Default::default()
        };
        let e = server_config(&swapped).unwrap_err().to_string();
        assert!(e.contains("cert.pem") || e.contains("key.pem"), "{e}");
        let missing = Config {
            tls_cert: Some(dir.join("nope.pem")),
            tls_key: Some(dir.join("nope.key")),
            ..Default::default()
        };
        assert!(server_config(&missing)
            .unwrap_err()
            .to_string()
            .contains("nope.pem"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
