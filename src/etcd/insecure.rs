//! `--insecure-skip-tls-verify`, as etcdctl means it: the connection is still TLS (and
//! still presents the client certificate when one is given), the server still has to prove
//! it holds the key of the certificate it shows, but that certificate is not checked
//! against any CA or host name. etcd-client's TLS options cannot say this, so the
//! connection is built here and handed to it as a ready channel.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{EtcdError, EtcdSettings};

/// Accepts whatever certificate the server presents, but checks the handshake
/// signatures made with it.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
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

/// The rustls configuration: no server verification, the client certificate if any,
/// and HTTP/2 offered by ALPN as gRPC requires. Built before connecting, so a bad
/// certificate or key file is reported as such.
pub(super) fn tls_config(s: &EtcdSettings) -> Result<Arc<rustls::ClientConfig>, EtcdError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| EtcdError::Settings(format!("TLS set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)));
    let mut config = match (&s.cert, &s.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert)?;
            let key = read_key(key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| EtcdError::TlsFile {
                    path: cert.clone(),
                    reason: format!("certificate and --key do not go together: {e}"),
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(EtcdError::Settings(
                "--cert and --key must be given together".into(),
            ));
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn read_certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, EtcdError> {
    let bad = |reason: String| EtcdError::TlsFile {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(
            "no certificate in it (no -----BEGIN CERTIFICATE line)".into()
        ));
    }
    Ok(chain)
}

fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, EtcdError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| EtcdError::TlsFile {
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

/// Connects to one endpoint over TLS made with `config` (from [`tls_config`]).
/// `options` carries the credentials; its TLS part is not used.
pub(super) async fn connect(
    config: Arc<rustls::ClientConfig>,
    s: &EtcdSettings,
    endpoint: &str,
    options: ConnectOptions,
) -> Result<Client, etcd_client::Error> {
    let tls = TlsConnector::from(config);
    let url = s.endpoint_url(endpoint);
    let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let authority = authority.trim_end_matches('/').to_owned();
    // The URI tonic sees is plain http: the TLS is ours, done inside the connector.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| etcd_client::Error::InvalidArgs(format!("endpoint {endpoint:?}: {e}")))?
        .connect_timeout(s.dial_timeout)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |uri: tonic::codegen::http::Uri| {
            let tls = tls.clone();
            async move {
                let host = uri.host().unwrap_or_default();
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let port = uri.port_u16().unwrap_or(2379);
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(host)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let stream = tls.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Client::from_channel(etcd_client::Channel::Tonic(channel), Some(options)).await
}
