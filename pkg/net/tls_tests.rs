//! Mutual TLS (DESIGN §10), in one process over Unix sockets: who gets through, and
//! what a refused peer is told.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::certs::{self, Issued};
use super::tls::Tls;
use super::{connect_with, Address, ListenAddr, Listener};

const WAIT: Duration = Duration::from_secs(5);

/// A CA and certificates it signs, all for this machine.
struct Authority {
    ca: Issued,
}

impl Authority {
    fn new() -> Authority {
        Authority {
            ca: certs::new_ca().expect("CA"),
        }
    }

    fn issue_for(&self, hosts: &[&str]) -> Issued {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        certs::issue(&self.ca.key_pem, "node", &hosts).expect("certificate")
    }

    fn tls(&self) -> Arc<Tls> {
        let issued = self.issue_for(&certs::LOCAL_HOSTS);
        Arc::new(self.tls_with(&issued))
    }

    /// Settings presenting `issued`, trusting this CA.
    fn tls_with(&self, issued: &Issued) -> Tls {
        Tls::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            self.ca.cert_pem.as_bytes(),
        )
        .expect("TLS settings")
    }
}

/// A server of gRPC health only, with `tls`, on a fresh Unix socket.
async fn serve(dir: &tempfile::TempDir, tls: Option<Arc<Tls>>) -> Address {
    let address = Address::Unix(dir.path().join(format!("{}.sock", rand::random::<u32>())));
    let listener = Listener::bind(&ListenAddr::Addr(address.clone()))
        .await
        .expect("bind");
    let (router, health) = crate::server::router_with_admin_services(&[]).await;
    health.set_serving(true).await;
    tokio::spawn(listener.serve_with(router, std::future::pending(), tls));
    address
}

/// One health check from a client with `tls`: Ok, or the error text a user would see.
async fn check(address: &Address, tls: Option<Arc<Tls>>) -> Result<(), String> {
    let channel = connect_with(address, WAIT, tls).await?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

#[tokio::test]
async fn peers_signed_by_the_ca_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new();
    let address = serve(&dir, Some(ca.tls())).await;
    check(&address, Some(ca.tls()))
        .await
        .expect("a peer of the same CA is served");
}

#[tokio::test]
async fn a_plaintext_client_is_told_that_tls_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new();
    let address = serve(&dir, Some(ca.tls())).await;
    let error = check(&address, None)
        .await
        .expect_err("plaintext is refused");
    assert!(error.starts_with("Unauthenticated"), "{error}");
    assert!(
        error.contains("requires mutual TLS") && error.contains("plaintext"),
        "{error}"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new();
    let address = serve(&dir, Some(ca.tls())).await;
    // The client trusts the server's CA, but its own certificate is another CA's.
    let stranger = Authority::new().issue_for(&certs::LOCAL_HOSTS);
    let stranger_key = stranger.key_pem.clone();
    let tls = Tls::from_pem(
        stranger.cert_pem.as_bytes(),
        stranger_key.as_bytes(),
        ca.ca.cert_pem.as_bytes(),
    );
    assert!(
        tls.as_ref()
            .err()
            .is_some_and(|e| e.contains("not signed by this cluster's CA")),
        "a certificate the CA did not sign is refused at start: {:?}",
        tls.err()
    );
    // Built past that start-up check, as a hostile client would be.
    let tls = Tls::from_pem_unchecked(
        stranger.cert_pem.as_bytes(),
        stranger_key.as_bytes(),
        ca.ca.cert_pem.as_bytes(),
    )
    .map(Arc::new)
    .expect("TLS settings");
    let error = check(&address, Some(tls)).await.expect_err("refused");
    assert!(error.starts_with("Unauthenticated"), "{error}");
    assert!(error.contains("not signed by this cluster's CA"), "{error}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_by_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let address = serve(&dir, Some(Authority::new().tls())).await;
    let error = check(&address, Some(Authority::new().tls()))
        .await
        .expect_err("refused");
    assert!(error.contains("TLS handshake with"), "{error}");
    assert!(error.contains("not signed by this cluster's CA"), "{error}");
}

#[tokio::test]
async fn a_server_certificate_for_another_host_is_refused_by_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new();
    let elsewhere = ca.issue_for(&["db.example.com"]);
    let address = serve(&dir, Some(Arc::new(ca.tls_with(&elsewhere)))).await;
    let error = check(&address, Some(ca.tls())).await.expect_err("refused");
    assert!(error.contains("does not name the host dialed"), "{error}");
}

#[tokio::test]
async fn a_tls_client_of_a_plaintext_server_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let address = serve(&dir, None).await;
    let error = check(&address, Some(Authority::new().tls()))
        .await
        .expect_err("refused");
    assert!(error.contains("seems to run without TLS"), "{error}");
}

#[tokio::test]
async fn plaintext_still_works_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let address = serve(&dir, None).await;
    check(&address, None).await.expect("plaintext to plaintext");
}

#[test]
fn bad_files_are_refused_at_start_with_the_reason() {
    let ca = Authority::new();
    let issued = ca.issue_for(&certs::LOCAL_HOSTS);
    let other = Authority::new().issue_for(&certs::LOCAL_HOSTS);
    let load = |cert: &str, key: &str, ca: &str| {
        Tls::from_pem(cert.as_bytes(), key.as_bytes(), ca.as_bytes())
            .err()
            .unwrap_or_default()
    };
    assert!(load("", &issued.key_pem, &ca.ca.cert_pem).contains("no certificate"));
    assert!(load(&issued.cert_pem, "", &ca.ca.cert_pem).contains("no private key"));
    assert!(load(&issued.cert_pem, &issued.key_pem, "").contains("CA file holds no certificate"));
    assert!(
        load(&issued.cert_pem, &other.key_pem, &ca.ca.cert_pem).contains("key does not go with")
    );
    assert!(load(&other.cert_pem, &other.key_pem, &ca.ca.cert_pem)
        .contains("not signed by this cluster's CA"));
    assert_eq!(load(&issued.cert_pem, &issued.key_pem, &ca.ca.cert_pem), "");
}
