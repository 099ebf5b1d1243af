//! Throw-away PKI for TLS tests: a CA, a server certificate (also used by
//! etcd for peer traffic), a client certificate, and a second, unrelated CA
//! with its own client certificate that a TLS etcd must refuse.
//!
//! Every file lives in an owned temp dir that is removed when the last clone
//! of the [`TlsFiles`] drops (kept with `LIFEBOAT_KEEP_TEMP=1`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, date_time_ymd,
};
use tempfile::TempDir;

use super::process;

/// Common name of the client certificate (etcd maps it to a user when auth is on).
pub const CLIENT_CN: &str = "root";
/// Host names the server certificate is valid for (IP SAN and DNS SAN).
pub const SERVER_SANS: [&str; 2] = ["127.0.0.1", "localhost"];

/// Removes the directory on drop unless `LIFEBOAT_KEEP_TEMP=1`.
#[derive(Debug)]
struct OwnedDir(TempDir);

impl Drop for OwnedDir {
    fn drop(&mut self) {
        if process::env_flag("LIFEBOAT_KEEP_TEMP") {
            process::keep_tempdir(&mut self.0);
        }
    }
}

/// PEM files of a generated PKI. Cloning is cheap; the directory lives until
/// the last clone (e.g. the one a TLS [`super::Cluster`] keeps) drops.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Directory holding every file below.
    pub dir: PathBuf,
    /// CA certificate that signed the server and client certificates.
    pub ca: PathBuf,
    /// Server certificate: SANs `127.0.0.1` (IP) and `localhost`, EKU
    /// serverAuth + clientAuth (etcd also presents it to its peers).
    pub server_cert: PathBuf,
    /// Private key of `server_cert` (PKCS#8 PEM, mode 0600).
    pub server_key: PathBuf,
    /// Client certificate, CN [`CLIENT_CN`], EKU clientAuth, signed by `ca`.
    pub client_cert: PathBuf,
    /// Private key of `client_cert` (PKCS#8 PEM, mode 0600).
    pub client_key: PathBuf,
    /// A second CA, unrelated to `ca`.
    pub other_ca: PathBuf,
    /// Client certificate (CN [`CLIENT_CN`], clientAuth) signed by `other_ca`:
    /// etcd (trusting only `ca`) must refuse it.
    pub other_client_cert: PathBuf,
    /// Private key of `other_client_cert` (mode 0600).
    pub other_client_key: PathBuf,
    _owner: Arc<OwnedDir>,
}

impl TlsFiles {
    /// Generates fresh ECDSA P-256 keys and certificates into a new temp dir.
    pub fn generate() -> TlsFiles {
        let tmp = process::owned_tempdir("tls");
        let dir = tmp.path().to_path_buf();

        let ca = new_ca("lifeboat test CA");
        let other = new_ca("lifeboat unrelated CA");

        let (server_cert, server_key) = leaf(
            &ca,
            "etcd-server",
            &SERVER_SANS,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_cert, client_key) =
            leaf(&ca, CLIENT_CN, &[], &[ExtendedKeyUsagePurpose::ClientAuth]);
        let (other_cert, other_key) = leaf(
            &other,
            CLIENT_CN,
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );

        TlsFiles {
            ca: write_file(&dir, "ca.pem", &ca.pem(), 0o644),
            server_cert: write_file(&dir, "server.pem", &server_cert, 0o644),
            server_key: write_file(&dir, "server-key.pem", &server_key, 0o600),
            client_cert: write_file(&dir, "client.pem", &client_cert, 0o644),
            client_key: write_file(&dir, "client-key.pem", &client_key, 0o600),
            other_ca: write_file(&dir, "other-ca.pem", &other.pem(), 0o644),
            other_client_cert: write_file(&dir, "other-client.pem", &other_cert, 0o644),
            other_client_key: write_file(&dir, "other-client-key.pem", &other_key, 0o600),
            dir,
            _owner: Arc::new(OwnedDir(tmp)),
        }
    }

    /// Writes `name` (inside [`TlsFiles::dir`]) with content that is not PEM
    /// at all, for "bad TLS file" tests. Returns its path.
    pub fn write_garbage(&self, name: &str) -> PathBuf {
        write_file(
            &self.dir,
            name,
            "this is not a PEM file\n\x00\x01\x02 garbage\n",
            0o600,
        )
    }

    /// Contents of one of the files (e.g. `read(&tls.ca)`), panicking with the path.
    pub fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// `--cacert/--cert/--key` for etcdctl with the trusted client identity.
    pub fn etcdctl_args(&self) -> Vec<String> {
        etcdctl_tls_args(&self.ca, &self.client_cert, &self.client_key)
    }
}

/// `--cacert/--cert/--key` arguments for etcdctl (3.4 and 3.5 spell them alike).
pub fn etcdctl_tls_args(ca: &Path, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        format!("--cacert={}", ca.display()),
        format!("--cert={}", cert.display()),
        format!("--key={}", key.display()),
    ]
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "etcd-lifeboat tests");
    dn.push(DnType::CommonName, cn);
    dn
}

fn base_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2120, 1, 1);
    params
}

fn new_ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = base_params(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("generate CA key");
    CertifiedIssuer::self_signed(params, key).expect("self-sign CA certificate")
}

/// A leaf certificate signed by `issuer`; returns (certificate PEM, key PEM).
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    ekus: &[ExtendedKeyUsagePurpose],
) -> (String, String) {
    let mut params = base_params(cn);
    params.subject_alt_names =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("certificate SANs")
            .subject_alt_names;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = ekus.to_vec();
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("generate leaf key");
    let cert = params
        .signed_by(&key, issuer)
        .expect("sign leaf certificate");
    (cert.pem(), key.serialize_pem())
}

fn write_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(content.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
