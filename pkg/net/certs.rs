//! Throwaway certificates to try mutual TLS with (`tpc certs`, `scripts/cluster.sh
//! --tls`, and the tests): a CA, and certificates it signs for nodes and tools.
//!
//! Made with rcgen: ECDSA P-256 keys; every certificate serves both ends of a
//! connection (server and client authentication), since every node is both. For a
//! real deployment bring your own CA (README, "Mutual TLS"); these never expire, and
//! the CA's key sits beside the certificates.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The names a certificate is valid for when none are given: this machine.
pub const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate and its private key, in PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// The CA's own parameters, from its key alone, so that the CA can sign again later
/// (`DIR/ca-key.pem`). Its name carries a digest of its key: two throwaway CAs never
/// share a name, so a certificate of the other one is reported as another CA's.
fn ca_params(key: &KeyPair) -> CertificateParams {
    use rcgen::PublicKeyData;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.der_bytes());
    let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("tpc throwaway CA {id}"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A new CA.
pub fn new_ca() -> Result<Issued, String> {
    let key = KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let cert = ca_params(&key)
        .self_signed(&key)
        .map_err(|e| format!("cannot make the CA: {e}"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate for `name`, valid for `hosts` (names or IP addresses), signed by the
/// CA whose key is `ca_key_pem`.
pub fn issue(ca_key_pem: &str, name: &str, hosts: &[String]) -> Result<Issued, String> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| format!("the CA key: {e}"))?;
    let issuer = Issuer::new(ca_params(&ca_key), ca_key);
    let mut params = CertificateParams::new(hosts.to_vec())
        .map_err(|e| format!("bad host name in {hosts:?}: {e}"))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("cannot sign {name}'s certificate: {e}"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// `tpc certs`: makes `DIR/ca.pem` and `DIR/ca-key.pem` if they are not there, then
/// `DIR/NAME.pem` and `DIR/NAME-key.pem` for each name. Refuses to overwrite a
/// certificate; returns the files written.
pub fn write(dir: &Path, names: &[String], hosts: &[String]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let mut written = Vec::new();
    if !ca_path.exists() {
        let ca = new_ca()?;
        write_new(&ca_key_path, &ca.key_pem, true)?;
        write_new(&ca_path, &ca.cert_pem, false)?;
        written.extend([ca_path.clone(), ca_key_path.clone()]);
    }
    let ca_pem =
        std::fs::read_to_string(&ca_path).map_err(|e| format!("{}: {e}", ca_path.display()))?;
    let ca_key = std::fs::read_to_string(&ca_key_path).map_err(|e| {
        format!(
            "{}: {e} (only a CA made by tpc certs can sign more here)",
            ca_key_path.display()
        )
    })?;
    for name in names {
        if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') || name == "ca" {
            return Err(format!("{name:?} cannot name a certificate file"));
        }
        let issued = issue(&ca_key, name, hosts)?;
        // A CA file that is not the one this key signs for would give certificates
        // that nobody trusts: check before writing.
        super::tls::Tls::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            ca_pem.as_bytes(),
        )
        .map_err(|e| {
            format!(
                "{} and {} do not go together: {e}",
                ca_path.display(),
                ca_key_path.display()
            )
        })?;
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}-key.pem"));
        write_new(&key_path, &issued.key_pem, true)?;
        write_new(&cert_path, &issued.cert_pem, false)?;
        written.extend([cert_path, key_path]);
    }
    Ok(written)
}

/// Writes a file that must not exist yet; a key is readable by its owner only.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!("{} exists; remove it first", path.display()),
        _ => format!("{}: {e}", path.display()),
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}
