//! Certificates for a TLS torture run (`--tls`): a CA, one node certificate
//! naming every slot's address (127.0.0.10 and up), and a client certificate,
//! so that the run exercises peer mutual TLS, client TLS and `--client-ca`.

use std::path::Path;

/// The doozerd flags for full TLS, and the client options that go with them.
pub fn make(dir: &Path) -> Result<(Vec<String>, doozer_client::Options), String> {
    let failed = |e: rcgen::Error| format!("cannot make the run's certificates: {e}");
    let ca_key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let hosts: Vec<String> = (0..=20).map(|i| format!("127.0.0.{}", 10 + i)).chain(["127.0.0.1".into()]).collect();
    let leaf = |names: Vec<String>| -> Result<(String, String), String> {
        let key = rcgen::KeyPair::generate().map_err(failed)?;
        let cert = rcgen::CertificateParams::new(names).map_err(failed)?.signed_by(&key, &issuer).map_err(failed)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (node, node_key) = leaf(hosts)?;
    let (client, client_key) = leaf(Vec::new())?;
    let write = |name: &str, text: &str| -> Result<String, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path.to_string_lossy().into_owned())
    };
    let ca = write("ca.pem", &ca_cert.pem())?;
    let (cert, key) = (write("node.pem", &node)?, write("node-key.pem", &node_key)?);
    let (client, client_key) = (write("client.pem", &client)?, write("client-key.pem", &client_key)?);
    let flags = ["-tlscert", &cert, "-tlskey", &key, "--client-ca", &ca];
    let peer = ["--peer-cert", &cert, "--peer-key", &key, "--peer-ca", &ca];
    let args = flags.iter().chain(peer.iter()).map(|s| s.to_string()).collect();
    let tls = doozer_client::Tls::from_files(&ca, Some(&client), Some(&client_key)).map_err(|e| e.to_string())?;
    Ok((args, doozer_client::Options { tls: Some(tls), ..doozer_client::Options::default() }))
}
