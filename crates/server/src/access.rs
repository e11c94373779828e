//! Access control: the read-write and read-only secrets, as in the original.
//!
//! A connection starts as if it had sent ACCESS with the empty string, so with
//! no secrets everyone has full access, with only a read-write secret anonymous
//! clients can read, and with both they can do nothing but REV, SELF and ACCESS.
//! Rights only accumulate. Secrets are compared in constant time.

use subtle::ConstantTimeEq;

/// What a connection may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    pub read: bool,
    pub write: bool,
}

impl Rights {
    pub fn union(self, other: Rights) -> Rights {
        Rights { read: self.read || other.read, write: self.write || other.write }
    }
}

/// The node's secrets (`DOOZER_RWSECRET`, `DOOZER_ROSECRET`).
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    pub rw: String,
    pub ro: String,
}

/// Compares a presented secret with ours in constant time.
pub fn same_secret(a: &[u8], b: &str) -> bool {
    a.ct_eq(b.as_bytes()).into()
}

impl Secrets {
    /// The rights `secret` grants, or `None` if it is no secret of ours.
    pub fn grant(&self, secret: &[u8]) -> Option<Rights> {
        if same_secret(secret, &self.rw) {
            Some(Rights { read: true, write: true })
        } else if same_secret(secret, &self.ro) {
            Some(Rights { read: true, write: false })
        } else {
            None
        }
    }

    /// The rights a new connection starts with.
    pub fn anonymous(&self) -> Rights {
        self.grant(b"").unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_rights_follow_the_original() {
        let none = Secrets::default();
        assert_eq!(none.anonymous(), Rights { read: true, write: true });
        assert_eq!(none.grant(b"x"), None);
        let rw_only = Secrets { rw: "w".into(), ro: String::new() };
        assert_eq!(rw_only.anonymous(), Rights { read: true, write: false });
        assert_eq!(rw_only.grant(b"w"), Some(Rights { read: true, write: true }));
        let both = Secrets { rw: "w".into(), ro: "r".into() };
        assert_eq!(both.anonymous(), Rights::default());
        assert_eq!(both.grant(b"r"), Some(Rights { read: true, write: false }));
        assert_eq!(both.grant(b"wx"), None);
    }
}
