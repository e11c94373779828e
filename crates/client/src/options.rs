//! How a client connects: timeouts, TLS, the DzNS boot URI for `cn=`, and
//! how long calls keep retrying across the cluster's addresses.

use crate::{Error, Stream};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Connection settings; [`Options::default`] is what the CLI uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long one address has to accept a connection (and finish TLS).
    pub connect_timeout: Duration,
    /// Speak TLS to every address (a doozerd started with `-tlscert`).
    pub tls: Option<Tls>,
    /// A DzNS URI: a `cn=NAME` in the cluster URI is looked up there, under
    /// `/ctl/ns/NAME/*`, as the original client did.
    pub boot: Option<String>,
    /// How long a [`crate::Cluster`] call keeps trying other addresses
    /// (with backoff) when the node in use cannot be reached.
    pub retry_for: Duration,
    /// Opens the byte stream to an address instead of TCP (a tunnel, a
    /// Unix socket, a simulated network); TLS is then the dialer's job.
    pub dialer: Option<Dialer>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            connect_timeout: Duration::from_secs(5),
            tls: None,
            boot: None,
            retry_for: Duration::from_secs(10),
            dialer: None,
        }
    }
}

/// A connection being opened by a [`Dialer`].
pub type Dialing = Pin<Box<dyn Future<Output = io::Result<Box<dyn Stream>>> + Send>>;

type Dial = dyn Fn(String) -> Dialing + Send + Sync;

/// A custom way to open a connection to `HOST:PORT`; see [`Options::dialer`].
#[derive(Clone)]
pub struct Dialer(Arc<Dial>);

impl Dialer {
    /// A dialer calling `f` with the address.
    pub fn new<F>(f: F) -> Dialer
    where
        F: Fn(String) -> Dialing + Send + Sync + 'static,
    {
        Dialer(Arc::new(f))
    }

    pub(crate) fn dial(&self, addr: &str) -> Dialing {
        (self.0)(addr.to_string())
    }
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialer")
    }
}

/// TLS settings: the CA that signed the server's certificate, and a client
/// certificate for servers that ask for one.
#[derive(Clone)]
pub struct Tls {
    pub(crate) config: Arc<ClientConfig>,
    /// The name the server's certificate must carry; default: the host of
    /// the address dialled.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

fn read(path: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Tls(format!("cannot read {path}: {e}")))
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("bad certificate in {path}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("no PEM certificate in {path}")));
    }
    Ok(certs)
}

impl Tls {
    /// Trusts the PEM certificates in `ca_file`; presents the PEM client
    /// certificate chain `cert_file` with key `key_file` if given (both or neither).
    pub fn from_files(ca_file: &str, cert_file: Option<&str>, key_file: Option<&str>) -> Result<Tls, Error> {
        let mut roots = RootCertStore::empty();
        for cert in certs(ca_file)? {
            roots.add(cert).map_err(|e| Error::Tls(format!("bad CA certificate in {ca_file}: {e}")))?;
        }
        let builder = ClientConfig::builder().with_root_certificates(roots);
        let config = match (cert_file, key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let pem = read(key)?;
                let private: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &pem[..])
                    .map_err(|e| Error::Tls(format!("bad key in {key}: {e}")))?
                    .ok_or_else(|| Error::Tls(format!("no PEM private key in {key}")))?;
                builder
                    .with_client_auth_cert(certs(cert)?, private)
                    .map_err(|e| Error::Tls(format!("client certificate and key do not fit: {e}")))?
            }
            _ => return Err(Error::Tls("a client certificate needs its key, and a key its certificate".into())),
        };
        Ok(Tls { config: Arc::new(config), server_name: None })
    }

    /// Uses a rustls configuration built elsewhere.
    pub fn from_config(config: Arc<ClientConfig>) -> Tls {
        Tls { config, server_name: None }
    }
}
