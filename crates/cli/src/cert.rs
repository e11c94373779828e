//! `doozer cert`: a CA and the certificates a TLS cluster needs, written as
//! PEM files, for users without openssl at hand (rcgen, ECDSA P-256).
//!
//! - `ca DIR`: `ca.pem`, `ca-key.pem`; valid ten years.
//! - `node DIR NAME HOST...`: `NAME.pem`, `NAME-key.pem`, signed by DIR's CA,
//!   naming each HOST (an IP or a DNS name, as peers and clients dial the
//!   node), for both server and client authentication: one pair serves as
//!   `-tlscert`/`-tlskey` and as `--peer-cert`/`--peer-key`. Valid one year.
//! - `client DIR NAME`: `NAME.pem`, `NAME-key.pem`, a client certificate
//!   for `--client-ca` clusters. Valid one year.
//!
//! It never overwrites a file: a CA key replaced by mistake would orphan
//! every certificate it signed. Keys are written readable by their owner only.
//!
//! Not here: loading certificates to connect (`doozer_client::Tls`).

use crate::flags::Flags;
use crate::Failure;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

pub const HELP: &str = "Writes TLS certificates as PEM files into <dir>:

  doozer cert ca <dir>                    ca.pem, ca-key.pem: a new CA (10 years)
  doozer cert node <dir> <name> <host>... <name>.pem, <name>-key.pem: a node's
                                          certificate from <dir>'s CA, naming
                                          each <host> (IP or DNS name) as peers
                                          and clients dial it (1 year)
  doozer cert client <dir> <name>         <name>.pem, <name>-key.pem: a client
                                          certificate, for doozerd --client-ca (1 year)

A node's pair serves both as -tlscert/-tlskey and --peer-cert/--peer-key;
ca.pem is --peer-ca, --client-ca and the clients' --cacert. Existing files
are never overwritten. Prints the paths written.
";

pub async fn cert(_flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let usage =
        || Failure::Message("use: doozer cert ca <dir> | node <dir> <name> <host>... | client <dir> <name>".into());
    let (op, rest) = args.split_first().ok_or_else(usage)?;
    let (dir, rest) = rest.split_first().map(|(d, r)| (Path::new(d), r)).ok_or_else(usage)?;
    let written = match (op.as_str(), rest) {
        ("ca", []) => make_ca(dir)?,
        ("node", [name, hosts @ ..]) if !hosts.is_empty() => make_leaf(dir, name, hosts, true)?,
        ("client", [name]) => make_leaf(dir, name, &[], false)?,
        _ => return Err(usage()),
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

fn failed(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Message(format!("cannot {what}: {e}"))
}

fn make_ca(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let key = KeyPair::generate().map_err(|e| failed("make a key", e))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("doozer CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    valid_for(&mut params, 3650);
    let cert = params.self_signed(&key).map_err(|e| failed("sign the CA", e))?;
    write_pair(dir, "ca", &cert.pem(), &key.serialize_pem())
}

/// A node's (server and client) or a client's certificate, signed by DIR's CA.
fn make_leaf(dir: &Path, who: &str, hosts: &[String], node: bool) -> Result<Vec<PathBuf>, Failure> {
    if who.is_empty() || who.contains(['/', '\\']) || who.starts_with('.') || who == "ca" {
        return Err(Failure::Message(format!("{who:?} cannot name a certificate file: use letters, digits, - or _")));
    }
    let read = |f: &str| {
        let path = dir.join(f);
        std::fs::read_to_string(&path).map_err(|e| {
            Failure::Message(format!(
                "cannot read {}: {e} (make a CA first: doozer cert ca {})",
                path.display(),
                dir.display()
            ))
        })
    };
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")?).map_err(|e| failed("read ca-key.pem", e))?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key).map_err(|e| failed("read ca.pem", e))?;
    let mut params = CertificateParams::new(hosts.to_vec())
        .map_err(|e| Failure::Message(format!("a host is neither an IP address nor a DNS name: {e}")))?;
    params.distinguished_name = name(who);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = if node {
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    params.use_authority_key_identifier_extension = true;
    valid_for(&mut params, 365);
    let key = KeyPair::generate().map_err(|e| failed("make a key", e))?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| failed("sign the certificate", e))?;
    write_pair(dir, who, &cert.pem(), &key.serialize_pem())
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn
}

/// From an hour ago (clocks differ) for `days`.
fn valid_for(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Writes `NAME.pem` and `NAME-key.pem`, refusing to replace either.
fn write_pair(dir: &Path, who: &str, cert: &str, key: &str) -> Result<Vec<PathBuf>, Failure> {
    std::fs::create_dir_all(dir).map_err(|e| failed(&format!("create {}", dir.display()), e))?;
    let cert_path = dir.join(format!("{who}.pem"));
    let key_path = dir.join(format!("{who}-key.pem"));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(Failure::Message(format!("{} exists; not overwriting it (remove it first)", path.display())));
        }
    }
    write_new(&key_path, key, 0o600)?;
    write_new(&cert_path, cert, 0o644)?;
    Ok(vec![cert_path, key_path])
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), Failure> {
    use std::io::Write;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = open.open(path).map_err(|e| failed(&format!("write {}", path.display()), e))?;
    file.write_all(text.as_bytes()).map_err(|e| failed(&format!("write {}", path.display()), e))
}
