//! A file's body as the store keeps it: one allocation holding the reference
//! count, the revision that wrote it, the length and the bytes, behind an
//! 8-byte pointer. The same allocation is the body of the SET command (and so
//! of the Raft log entry), of the file in the tree and of the event in the
//! history: a 100-byte file costs one 128-byte allocation.
//!
//! Why the revision lives in the body: the tree's slots are most of its cost
//! beyond the bodies themselves (B-tree leaves are often half empty), so a
//! directory maps a name straight to a body, 24 bytes a slot. A body is
//! written into the tree at one revision; its first apply stamps that
//! revision, and applying it again at another revision (the same command in a
//! second store, as tests do) takes a copy, so a stamp never changes.

use crate::Rev;
use bytes::Bytes;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::atomic::{AtomicI64, Ordering};
use triomphe::ThinArc;

#[derive(Clone)]
pub struct Body(ThinArc<AtomicI64, u8>);

/// The stamp of a body not yet written into a tree.
const UNSTAMPED: Rev = 0;

impl Body {
    /// The body as `Bytes` for an answer, sharing this allocation (no copy).
    pub fn to_bytes(&self) -> Bytes {
        if self.is_empty() {
            return Bytes::new();
        }
        Bytes::from_owner(Shared(self.0.clone()))
    }

    /// The revision this body was written at, as a file of the tree.
    pub(crate) fn rev(&self) -> Rev {
        self.0.header.header.load(Ordering::Acquire)
    }

    /// This body as the file written at `rev`: the same allocation if it is
    /// not yet stamped or already stamped `rev`, else a copy.
    pub(crate) fn stamped(&self, rev: Rev) -> Body {
        match self.0.header.header.compare_exchange(UNSTAMPED, rev, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => self.clone(),
            Err(had) if had == rev => self.clone(),
            Err(_) => Body::with_rev(self, rev),
        }
    }

    /// A body written at `rev` (`UNSTAMPED`: not yet), e.g. read back from an image.
    pub(crate) fn with_rev(bytes: &[u8], rev: Rev) -> Body {
        Body(ThinArc::from_header_and_slice(AtomicI64::new(rev), bytes))
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::from(&[][..])
    }
}

/// Lets `Bytes` hold a body without copying it.
struct Shared(ThinArc<AtomicI64, u8>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0.slice
    }
}

// A body is its bytes: the stamp is bookkeeping, not content.
impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        **self == **other
    }
}

impl Eq for Body {}

impl Hash for Body {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (**self).hash(h)
    }
}

impl Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0.slice
    }
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<&[u8]> for Body {
    fn from(b: &[u8]) -> Body {
        Body::with_rev(b, UNSTAMPED)
    }
}

impl From<&Bytes> for Body {
    fn from(b: &Bytes) -> Body {
        Body::from(&b[..])
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Body {
        Body::from(&b[..])
    }
}

impl From<&str> for Body {
    fn from(s: &str) -> Body {
        Body::from(s.as_bytes())
    }
}

impl PartialEq<[u8]> for Body {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<&[u8]> for Body {
    fn eq(&self, other: &&[u8]) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `Bytes` shows itself: b"..." with escapes.
        fmt::Debug::fmt(&self.to_bytes(), f)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        d.deserialize_bytes(BodyVisitor)
    }
}

/// Builds the body straight from the decoder's bytes: one copy, not two.
#[cfg(feature = "serde")]
struct BodyVisitor;

#[cfg(feature = "serde")]
impl<'de> serde::de::Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Body, E> {
        Ok(Body::from(b))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, b: Vec<u8>) -> Result<Body, E> {
        Ok(Body::from(&b[..]))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        let mut b = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            b.push(byte);
        }
        Ok(Body::from(&b[..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bodies_equal_each_other() {
        assert_eq!(Body::from(&b""[..]), Body::default());
        assert!(Body::default().is_empty());
        assert_eq!(Body::default().to_bytes(), Bytes::new());
    }

    #[test]
    fn bytes_share_the_body() {
        let b = Body::from("hello");
        let out = b.to_bytes();
        assert_eq!(&out[..], b"hello");
        assert_eq!(out.as_ptr(), b.as_ptr());
        assert_eq!(b, &b"hello"[..]);
    }

    #[test]
    fn a_stamp_never_changes() {
        let b = Body::from("x");
        assert_eq!(b.rev(), UNSTAMPED);
        let first = b.stamped(5);
        assert_eq!((first.rev(), b.rev()), (5, 5));
        assert_eq!(first.as_ptr(), b.as_ptr(), "the first stamp shares the allocation");
        assert_eq!(b.stamped(5).as_ptr(), b.as_ptr());
        let other = b.stamped(9);
        assert_eq!((other.rev(), b.rev()), (9, 5));
        assert_ne!(other.as_ptr(), b.as_ptr());
        assert_eq!(other, b);
    }

    #[test]
    fn a_body_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Body>(), 8);
    }
}
