//! The `/ctl` subtree of a one-node cluster, laid out as the original does:
//! `/ctl/name`, `/ctl/node/<id>/{addr,hostname,version}`, `/ctl/cal/0` and
//! `/ctl/node/<id>/writable`. Node ids are 80 random bits in base32.

use crate::node::Node;
use bytes::Bytes;
use doozer_store::{Command, Outcome, CLOBBER};
use rand::RngCore;

/// The version written to `/ctl/node/<id>/version` and printed by `-v`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// 80 bits as 16 characters of standard base32.
pub fn encode_id(bits: [u8; 10]) -> String {
    let mut n = bits
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let mut out = [0u8; 16];
    for c in out.iter_mut().rev() {
        *c = BASE32[(n & 31) as usize];
        n >>= 5;
    }
    out.iter().map(|&c| c as char).collect()
}

/// A fresh node id: a node never reuses one, even on the same address.
pub fn new_id() -> String {
    let mut bits = [0u8; 10];
    rand::rng().fill_bytes(&mut bits);
    encode_id(bits)
}

/// Writes the seed's `/ctl` files, each as one revision.
pub fn bootstrap(node: &Node, cluster: &str, addr: &str) {
    let id = node.id().to_string();
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let files = [
        ("/ctl/name".to_string(), cluster.to_string()),
        (format!("/ctl/node/{id}/addr"), addr.to_string()),
        (format!("/ctl/node/{id}/hostname"), host),
        (format!("/ctl/node/{id}/version"), VERSION.to_string()),
        ("/ctl/cal/0".to_string(), id.clone()),
        (format!("/ctl/node/{id}/writable"), "true".to_string()),
    ];
    for (path, body) in files {
        let outcome = node.apply(&Command::Set {
            path,
            rev: CLOBBER,
            body: Bytes::from(body),
        });
        debug_assert!(matches!(outcome, Outcome::Changed(_)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_base32_chars() {
        assert_eq!(encode_id([0; 10]), "AAAAAAAAAAAAAAAA");
        assert_eq!(encode_id([0xff; 10]), "7777777777777777");
        // RFC 4648 test vector: "fooba" is MZXW6YTB; ten bytes give sixteen chars.
        assert_eq!(encode_id(*b"foobafooba"), "MZXW6YTBMZXW6YTB");
        let id = new_id();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| BASE32.contains(&b)));
        assert_ne!(new_id(), id);
    }
}
