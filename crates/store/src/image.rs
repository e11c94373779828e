//! A whole store in transferable form, for new cluster members (and backups):
//! the tree at a base revision plus the events after it, so that the receiver
//! rebuilds the same tree, the same file revisions and a history window from
//! which WAITs on recent revisions still work.
//!
//! Binary format, version 1 (integers big-endian):
//!
//! ```text
//! "DZIMAGE1"                      8 bytes
//! base revision                   i64
//! file count                      u64, then per file:
//!   path length u32, path, file revision i64, body length u32, body
//! event count                     u64, then per event (revisions base+1, base+2, …):
//!   kind u8 (1 set, 2 del, 3 nop), path length u32, path, body length u32, body
//! checksum                        u64, FNV-1a over every byte before it
//! ```
//!
//! Version 2 (`"DZIMAGE2"`) is version 1 with the lease table after the
//! events, as it stands at the image's last revision; it is written only
//! when leases are granted, so images without leases read everywhere:
//!
//! ```text
//! lease count                     u64, then per lease, by id:
//!   id u64, ttl u32 (seconds), file count u64, then per file: path length u32, path
//! ```

use crate::codec::{kind_byte, kind_from_byte, put_bytes, read_tree, Fnv, Input};
use crate::lease::Leases;
use crate::store::{Event, HistoryLimits, Snapshot, Store};
use crate::{Body, Rev};

const MAGIC: &[u8; 8] = b"DZIMAGE1";
const MAGIC_LEASES: &[u8; 8] = b"DZIMAGE2";

/// The tree at `base` and every event after it, oldest first, and the
/// leases granted after the last event.
#[derive(Clone)]
pub struct Image {
    pub base: Snapshot,
    pub events: Vec<Event>,
    pub leases: Leases,
}

/// Why bytes are not an image: what was wrong and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageError {
    pub offset: usize,
    pub what: String,
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for ImageError {}

impl Image {
    /// The revision the image brings a store to.
    pub fn rev(&self) -> Rev {
        self.base.rev() + self.events.len() as Rev
    }

    /// Appends the image in the format above.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(if self.leases.is_empty() { MAGIC } else { MAGIC_LEASES });
        out.extend_from_slice(&self.base.rev().to_be_bytes());
        // The count goes before the files: written once they are counted.
        let count_at = out.len();
        out.extend_from_slice(&0u64.to_be_bytes());
        let mut count = 0u64;
        self.base.each_file(|path, body| {
            put_bytes(out, path.as_bytes());
            out.extend_from_slice(&body.rev().to_be_bytes());
            put_bytes(out, body);
            count += 1;
        });
        out[count_at..count_at + 8].copy_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&(self.events.len() as u64).to_be_bytes());
        for e in &self.events {
            out.push(kind_byte(e.kind));
            put_bytes(out, e.path.as_bytes());
            put_bytes(out, &e.body);
        }
        if !self.leases.is_empty() {
            out.extend_from_slice(&(self.leases.len() as u64).to_be_bytes());
            for (id, lease) in self.leases.iter() {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&lease.ttl.to_be_bytes());
                out.extend_from_slice(&(lease.files.len() as u64).to_be_bytes());
                for path in &lease.files {
                    put_bytes(out, path.as_bytes());
                }
            }
        }
        let mut sum = Fnv::new();
        sum.update(&out[start..]);
        out.extend_from_slice(&sum.0.to_be_bytes());
    }

    /// Reads an image, checking every length against the bytes there are, every
    /// path, the revisions and the checksum.
    pub fn decode(bytes: &[u8]) -> Result<Image, ImageError> {
        let mut input = Input::new(bytes);
        let magic = input.take(8)?;
        let with_leases = magic == MAGIC_LEASES;
        if magic != MAGIC && !with_leases {
            return Err(ImageError { offset: 0, what: "not a store image (or an unknown version)".into() });
        }
        let base_rev = input.i64()?;
        let root = read_tree(&mut input, base_rev)?;
        let mut events = Vec::new();
        for i in 0..input.u64()? {
            let at = input.at;
            let kind = kind_from_byte(input.u8()?, at)?;
            let path = input.path()?;
            let body = Body::from(input.chunk()?);
            events.push(Event { rev: base_rev + 1 + i as Rev, path: path.into(), body, kind });
        }
        let leases = if with_leases { read_leases(&mut input)? } else { Leases::new() };
        input.check_sum()?;
        if input.at != bytes.len() {
            return Err(input.err("trailing bytes after the image"));
        }
        Ok(Image { base: Snapshot::new(base_rev, root), events, leases })
    }
}

/// The lease table of a version 2 image, built through [`Leases`]' own
/// operations so that a damaged table cannot break its invariants.
fn read_leases(input: &mut Input<&[u8]>) -> Result<Leases, ImageError> {
    let mut leases = Leases::new();
    for _ in 0..input.u64()? {
        let at = input.at;
        let id = input.u64()?;
        let ttl = input.u32()?;
        leases.grant(id, ttl).map_err(|e| ImageError { offset: at, what: format!("lease {id:x}: {e}") })?;
        for _ in 0..input.u64()? {
            let at = input.at;
            let path = input.path()?;
            if leases.lease_of(&path).is_some() {
                return Err(ImageError { offset: at, what: format!("{path} is attached to two leases") });
            }
            leases.attach(&path, id).map_err(|e| ImageError { offset: at, what: e.to_string() })?;
        }
    }
    Ok(leases)
}

impl Store {
    /// The store as an image: the tree just below the history window and every
    /// event in it. Cheap: the tree is shared, not copied.
    pub fn image(&self) -> Image {
        let (base, events) = self.history_parts();
        Image { base, events, leases: self.leases().clone() }
    }

    /// Rebuilds a store from an image by replaying its events on its base tree,
    /// so revisions, file revisions and the history window match the source.
    pub fn from_image(image: &Image, limits: HistoryLimits) -> Result<Store, ImageError> {
        let mut store = Store::at(image.base.clone(), limits);
        for e in &image.events {
            store.replay(e)?;
        }
        store.set_leases(image.leases.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Command;
    use crate::tree::File;

    fn sample() -> Store {
        let mut s = Store::new(HistoryLimits { revs: 5, bytes: usize::MAX });
        for i in 0..12 {
            s.apply(&Command::Set {
                path: format!("/d{}/f{}", i % 3, i % 4),
                rev: -1,
                body: Body::from(vec![i as u8; i]),
            });
        }
        s.apply(&Command::Del { path: "/d0/f0".into(), rev: -1 });
        s.apply(&Command::Nop);
        s
    }

    fn dump(s: &Store) -> Vec<(String, File)> {
        s.current().walk(&crate::Glob::parse("/**").unwrap_or_else(|_| unreachable!()))
    }

    #[test]
    fn image_round_trips_tree_revisions_and_history() {
        let s = sample();
        let mut bytes = Vec::new();
        s.image().encode(&mut bytes);
        let image = Image::decode(&bytes).unwrap();
        assert_eq!(image.rev(), s.rev());
        let t = Store::from_image(&image, HistoryLimits { revs: 5, bytes: usize::MAX }).unwrap();
        assert_eq!(t.rev(), s.rev());
        assert_eq!(dump(&t), dump(&s));
        let g = crate::Glob::parse("/**").unwrap();
        for r in s.oldest()..=s.rev() {
            assert_eq!(t.first_event(r, &g), s.first_event(r, &g), "event at {r}");
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected() {
        let mut bytes = Vec::new();
        sample().image().encode(&mut bytes);
        for len in 0..bytes.len() {
            assert!(Image::decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let e = Image::decode(&b).err().unwrap_or_else(|| panic!("flip at {i} accepted"));
            assert!(e.offset <= bytes.len());
        }
    }
}
