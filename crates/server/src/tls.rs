//! TLS on a node's one port, for clients and for peers, with rustls.
//!
//! - Clients: `-tlscert`, `-tlskey`; with `--client-ca` as well, only a
//!   client holding a certificate from that CA gets through the handshake.
//! - Peers: `--peer-cert`, `--peer-key`, `--peer-ca`: every peer connection,
//!   in and out, is mutual TLS against that CA. The same certificate serves
//!   both ends, so it must name the node's address (IP or DNS, as members
//!   dial it) and allow both server and client authentication.
//!
//! Clients and peers share the `-l` port: a TLS connection opens with a
//! ClientHello (first byte [`HANDSHAKE`], which neither a client frame nor
//! the peer magic can begin with), and a peer's asks for the ALPN protocol
//! [`PEER_ALPN`]. That choice is made before any certificate is sent, and
//! each side then holds the other to its own rules (`listen`).
//!
//! The files are read at start and again on SIGHUP ([`Tls::reload`]): new
//! connections take the new certificates, open ones keep theirs, and a
//! reload that fails keeps what was in use. [`Tls::expiring`] says which
//! certificates end soon.
//!
//! Not here: what a connection does once it is open (`listen`, `conn`,
//! `consensus`).

use parking_lot::RwLock;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, WebPkiClientVerifier};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The ALPN protocol a peer connection asks for.
pub const PEER_ALPN: &[u8] = b"doozer-peer";
/// The first byte of a TLS connection (a handshake record).
pub const HANDSHAKE: u8 = 0x16;
/// A plaintext fatal TLS alert, `no_application_protocol`: a node without
/// TLS answers a TLS hello with it, so that a peer with `--peer-cert` stops
/// trying at once instead of retrying a node that will never speak TLS.
pub const NO_TLS_HERE: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x78];

/// Where the PEM files are. Each pair goes together.
#[derive(Clone, Debug, Default)]
pub struct Files {
    /// Certificate and key shown to clients (`-tlscert`, `-tlskey`).
    pub client: Option<(String, String)>,
    /// Clients must show a certificate from this CA (`--client-ca`).
    pub client_ca: Option<String>,
    /// Certificate, key and CA for peers (`--peer-cert`, `--peer-key`, `--peer-ca`).
    pub peer: Option<(String, String, String)>,
}

impl Files {
    fn is_empty(&self) -> bool {
        self.client.is_none() && self.peer.is_none()
    }
}

/// One reading of the files.
struct Loaded {
    client: Option<Arc<ServerConfig>>,
    /// The client configuration, but refusing the peer ALPN: what a peer
    /// that speaks TLS meets at a node without `--peer-cert` (it is told
    /// `no_application_protocol`, and stops trying).
    no_peers: Option<Arc<ServerConfig>>,
    peer_server: Option<Arc<ServerConfig>>,
    peer_client: Option<Arc<ClientConfig>>,
    /// Each certificate file's first certificate: when it expires.
    expiries: Vec<(String, i64)>,
}

/// A node's TLS configurations, reloadable.
pub struct Tls {
    files: Files,
    loaded: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files; `None` if none are given.
    pub fn load(files: Files) -> Result<Option<Arc<Tls>>, String> {
        if files.client_ca.is_some() && files.client.is_none() {
            return Err("--client-ca checks TLS clients: give -tlscert and -tlskey too".into());
        }
        if files.is_empty() {
            return Ok(None);
        }
        let loaded = read(&files)?;
        Ok(Some(Arc::new(Tls { files, loaded: RwLock::new(Arc::new(loaded)) })))
    }

    /// Reads the files again; on an error the configuration in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = read(&self.files)?;
        *self.loaded.write() = Arc::new(loaded);
        Ok(())
    }

    fn now(&self) -> Arc<Loaded> {
        self.loaded.read().clone()
    }

    /// True if clients must speak TLS (`-tlscert`).
    pub fn clients_need_tls(&self) -> bool {
        self.files.client.is_some()
    }

    /// True if peers must speak TLS (`--peer-cert`).
    pub fn peers_need_tls(&self) -> bool {
        self.files.peer.is_some()
    }

    /// Whether the handshake that opened with `hello` is a peer's, and the
    /// configuration to answer it with (for a peer at a node without peer
    /// TLS, one that refuses it); `None` if this node takes no such connection.
    pub fn accept(&self, hello: &ClientHello<'_>) -> (bool, Option<Arc<ServerConfig>>) {
        let peer = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == PEER_ALPN));
        let loaded = self.now();
        let config = match peer {
            true => loaded.peer_server.clone().or_else(|| loaded.no_peers.clone()),
            false => loaded.client.clone(),
        };
        (peer, config)
    }

    /// How to dial a peer, if peers speak TLS.
    pub fn peer_connector(&self) -> Option<Arc<ClientConfig>> {
        self.now().peer_client.clone()
    }

    /// One line for each certificate that expires (or has expired) within
    /// `within` of `now`.
    pub fn expiring(&self, now: SystemTime, within: Duration) -> Vec<String> {
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let horizon = now.saturating_add(within.as_secs() as i64);
        self.now()
            .expiries
            .iter()
            .filter(|(_, end)| *end <= horizon)
            .map(|(path, end)| {
                let when = x509_parser::time::ASN1Time::from_timestamp(*end).map_or(end.to_string(), |t| t.to_string());
                if *end <= now {
                    format!("the certificate in {path} expired on {when}: replace it and send doozerd SIGHUP")
                } else {
                    let days = (end - now) / 86_400;
                    format!("the certificate in {path} expires in {days} days, on {when}: replace it and send doozerd SIGHUP")
                }
            })
            .collect()
    }
}

fn read(files: &Files) -> Result<Loaded, String> {
    let mut expiries = Vec::new();
    let client = match &files.client {
        None => None,
        Some((cert, key)) => {
            let chain = certs(cert)?;
            expiries.push((cert.clone(), expiry(cert, &chain)?));
            let builder = match &files.client_ca {
                None => ServerConfig::builder().with_no_client_auth(),
                Some(ca) => {
                    let roots = roots(ca, &mut expiries)?;
                    let verifier = WebPkiClientVerifier::builder(roots)
                        .build()
                        .map_err(|e| format!("cannot check clients against {ca}: {e}"))?;
                    ServerConfig::builder().with_client_cert_verifier(verifier)
                }
            };
            let config = builder.with_single_cert(chain, private_key(key)?).map_err(|e| unfit(cert, key, e))?;
            Some(Arc::new(config))
        }
    };
    let (peer_server, peer_client) = match &files.peer {
        None => (None, None),
        Some((cert, key, ca)) => {
            let chain = certs(cert)?;
            expiries.push((cert.clone(), expiry(cert, &chain)?));
            let roots = roots(ca, &mut expiries)?;
            let verifier = WebPkiClientVerifier::builder(roots.clone())
                .build()
                .map_err(|e| format!("cannot check peers against {ca}: {e}"))?;
            let mut server = ServerConfig::builder()
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), private_key(key)?)
                .map_err(|e| unfit(cert, key, e))?;
            server.alpn_protocols = vec![PEER_ALPN.to_vec()];
            // Peer connections are long-lived and never resumed.
            server.send_tls13_tickets = 0;
            let mut client = ClientConfig::builder()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, private_key(key)?)
                .map_err(|e| unfit(cert, key, e))?;
            client.alpn_protocols = vec![PEER_ALPN.to_vec()];
            (Some(Arc::new(server)), Some(Arc::new(client)))
        }
    };
    let no_peers = client.as_ref().map(|c| {
        let mut refusing = ServerConfig::clone(c);
        refusing.alpn_protocols = vec![b"doozer-client".to_vec()];
        Arc::new(refusing)
    });
    Ok(Loaded { client, no_peers, peer_server, peer_client, expiries })
}

fn unfit(cert: &str, key: &str, e: impl std::fmt::Display) -> String {
    format!("the certificate in {cert} and the key in {key} do not fit together: {e}")
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate found in {path}"));
    }
    Ok(certs)
}

fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(path)?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("bad key in {path}: {e}"))?
        .ok_or_else(|| format!("no PEM private key found in {path}"))
}

/// The CA certificates in `path`, noting when the first expires.
fn roots(path: &str, expiries: &mut Vec<(String, i64)>) -> Result<Arc<RootCertStore>, String> {
    let certs = certs(path)?;
    expiries.push((path.to_string(), expiry(path, &certs)?));
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| format!("bad CA certificate in {path}: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// When the first certificate of a chain stops being valid (Unix seconds).
fn expiry(path: &str, chain: &[CertificateDer<'_>]) -> Result<i64, String> {
    let first = chain.first().ok_or_else(|| format!("no certificate in {path}"))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(first).map_err(|e| format!("bad certificate in {path}: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Logs a warning for each certificate that expires within `within`, now
/// and every six hours after.
pub async fn warn_of_expiry(tls: Arc<Tls>, within: Duration) {
    loop {
        for line in tls.expiring(SystemTime::now(), within) {
            tracing::warn!("{line}");
        }
        tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// A CA, and a node certificate it signed that ends on `end`.
    fn pki(dir: &std::path::Path, end: (i32, u8, u8)) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(end.0, end.1, end.2);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (
            write(dir, "node.pem", &cert.pem()),
            write(dir, "node-key.pem", &key.serialize_pem()),
            write(dir, "ca.pem", &ca_cert.pem()),
        )
    }

    #[test]
    fn expiry_is_reported_ahead_of_time_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = pki(dir.path(), (2030, 1, 10));
        let tls = Tls::load(Files { peer: Some((cert.clone(), key, ca)), ..Files::default() }).unwrap().unwrap();
        let at = |y, m, d| {
            let t = rcgen::date_time_ymd(y, m, d).unix_timestamp();
            UNIX_EPOCH + Duration::from_secs(t as u64)
        };
        let week = Duration::from_secs(7 * 86_400);
        assert!(tls.expiring(at(2029, 12, 1), week).is_empty());
        let soon = tls.expiring(at(2030, 1, 5), week);
        assert_eq!(soon.len(), 1, "{soon:?}");
        assert!(soon[0].contains(&cert) && soon[0].contains("expires in 5 days"), "{soon:?}");
        let late = tls.expiring(at(2030, 2, 1), week);
        assert!(late.iter().any(|l| l.contains("expired")), "{late:?}");
    }

    #[test]
    fn partial_or_broken_files_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = pki(dir.path(), (2040, 1, 1));
        let only_ca = Files { client_ca: Some(ca.clone()), ..Files::default() };
        assert!(Tls::load(only_ca).err().unwrap().contains("-tlscert"));
        let junk = write(dir.path(), "junk.pem", "not a certificate");
        let broken = Files { peer: Some((cert.clone(), key.clone(), junk.clone())), ..Files::default() };
        assert!(Tls::load(broken).err().unwrap().contains(&junk));
        let swapped = Files { client: Some((cert.clone(), ca.clone())), ..Files::default() };
        assert!(Tls::load(swapped).err().unwrap().contains(&ca));
        assert!(Tls::load(Files::default()).unwrap().is_none());
    }

    #[test]
    fn a_failed_reload_keeps_the_certificates_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = pki(dir.path(), (2040, 1, 1));
        let tls = Tls::load(Files { peer: Some((cert.clone(), key, ca)), ..Files::default() }).unwrap().unwrap();
        std::fs::write(&cert, "garbage").unwrap();
        assert!(tls.reload().err().unwrap().contains(&cert));
        assert!(tls.peer_connector().is_some());
    }
}
