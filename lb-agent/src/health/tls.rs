//! The TLS side of `tls` and `https` checks: one rustls client configuration per checker,
//! built from the check's CA certificates (or accepting any certificate with `verify = false`).

use super::TlsSpec;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::{net::IpAddr, sync::Arc};
use tokio_rustls::TlsConnector;

/// What a checker needs for its TLS handshakes: built once, used by every probe.
#[derive(Clone)]
pub(super) struct TlsSetup {
    pub(super) connector: TlsConnector,
    /// Sent as SNI (a DNS name) and verified; the backend's address when no name is set
    /// (rustls sends no SNI for an address).
    pub(super) name: ServerName<'static>,
}

impl TlsSetup {
    /// `alpn`: the protocols offered (`http/1.1` for HTTPS checks).
    pub(super) fn new(spec: &TlsSpec, backend: IpAddr, alpn: &[&[u8]]) -> Result<Self, String> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let mut config = if spec.verify {
            let mut roots = RootCertStore::empty();
            for cert in spec.ca.certs() {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("TLS setup: CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("TLS setup: no CA certificate loaded (ca_file)".to_string());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = match &spec.server_name {
            Some(n) => ServerName::try_from(n.clone())
                .map_err(|e| format!("TLS setup: server name {n:?}: {e}"))?,
            None => ServerName::IpAddress(backend.into()),
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

/// `verify = false`: any certificate is accepted (self-signed backends); the handshake's
/// signatures are still checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
