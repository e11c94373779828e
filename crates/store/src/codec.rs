//! The pieces the store's binary formats share (images, backups, journals):
//! a running FNV-1a checksum, length-prefixed fields, a reader that knows
//! its offset for error messages, and rebuilding a tree a file at a time.

use crate::image::ImageError;
use crate::path::is_valid_path;
use crate::store::EventKind;
use crate::tree::{self, Dir};
use crate::Body;
use crate::Rev;
use std::io::Read;

/// Largest single field or record a reader accepts.
pub(crate) const MAX_RECORD: usize = 1 << 31;

#[derive(Clone, Copy)]
pub(crate) struct Fnv(pub(crate) u64);

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// Reads a stream, tracking the offset and a running checksum.
pub(crate) struct Input<R> {
    pub(crate) r: R,
    pub(crate) at: usize,
    pub(crate) hash: Fnv,
}

impl<R: Read> Input<R> {
    pub(crate) fn new(r: R) -> Input<R> {
        Input { r, at: 0, hash: Fnv::new() }
    }

    pub(crate) fn err(&self, what: impl Into<String>) -> ImageError {
        ImageError { offset: self.at, what: what.into() }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<Vec<u8>, ImageError> {
        let mut buf = Vec::new();
        let got =
            (&mut self.r).take(n as u64).read_to_end(&mut buf).map_err(|e| self.err(format!("read failed: {e}")))?;
        if got < n {
            self.at += got;
            return Err(self.err(format!("truncated: {n} bytes needed, {got} left")));
        }
        self.hash.update(&buf);
        self.at += n;
        Ok(buf)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ImageError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ImageError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, ImageError> {
        Ok(self.u64()? as i64)
    }

    pub(crate) fn chunk(&mut self) -> Result<Vec<u8>, ImageError> {
        let n = u32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default()) as usize;
        if n > MAX_RECORD {
            return Err(self.err(format!("a length of {n} bytes is not plausible")));
        }
        self.take(n)
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String, ImageError> {
        let at = self.at;
        String::from_utf8(self.chunk()?).map_err(|_| ImageError { offset: at, what: format!("{what} is not UTF-8") })
    }

    pub(crate) fn path(&mut self) -> Result<String, ImageError> {
        let at = self.at;
        let p = self.string("a path")?;
        if !is_valid_path(&p) {
            return Err(ImageError { offset: at, what: format!("bad path {p:?}") });
        }
        Ok(p)
    }

    /// Reads a stored checksum and compares it with what was read before it.
    pub(crate) fn check_sum(&mut self) -> Result<(), ImageError> {
        let want = self.hash.0;
        let at = self.at;
        let got = self.u64()?;
        if got != want {
            return Err(ImageError { offset: at, what: "checksum mismatch: the file is corrupt".into() });
        }
        Ok(())
    }
}

/// Adds a file to a tree being rebuilt, checking it fits.
pub(crate) fn add_file(
    root: &mut Dir,
    path: &str,
    rev: Rev,
    body: Vec<u8>,
    max_rev: Rev,
    at: usize,
) -> Result<(), ImageError> {
    if rev < 1 || rev > max_rev {
        return Err(ImageError { offset: at, what: format!("file {path} has revision {rev} outside 1..={max_rev}") });
    }
    let names: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if let tree::Lookup::Found(_) = tree::lookup(root, &names) {
        return Err(ImageError { offset: at, what: format!("file {path} appears twice") });
    }
    tree::set_mut(root, &names, Body::with_rev(&body, rev))
        .map(drop)
        .map_err(|_| ImageError { offset: at, what: format!("file {path} lies below another file") })
}

/// An event's kind as one byte: 1 set, 2 del, 3 nop.
pub(crate) fn kind_byte(k: EventKind) -> u8 {
    match k {
        EventKind::Set => 1,
        EventKind::Del => 2,
        EventKind::Nop => 3,
    }
}

pub(crate) fn kind_from_byte(b: u8, at: usize) -> Result<EventKind, ImageError> {
    match b {
        1 => Ok(EventKind::Set),
        2 => Ok(EventKind::Del),
        3 => Ok(EventKind::Nop),
        k => Err(ImageError { offset: at, what: format!("unknown event kind {k}") }),
    }
}

/// Reads a file count and that many files (path, revision, body) into a tree
/// whose files are all at or below `max_rev`.
pub(crate) fn read_tree<R: Read>(input: &mut Input<R>, max_rev: Rev) -> Result<Dir, ImageError> {
    let mut root = Dir::new();
    for _ in 0..input.u64()? {
        let at = input.at;
        let path = input.path()?;
        let rev = input.i64()?;
        let body = input.chunk()?;
        add_file(&mut root, &path, rev, body, max_rev, at)?;
    }
    Ok(root)
}
