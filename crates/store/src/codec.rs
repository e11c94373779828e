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

/// Fields up to this long are read into a buffer sized at once.
const EAGER: usize = 64 << 10;

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
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
        self.take_into(n, &mut buf)?;
        Ok(buf)
    }

    /// Reads `n` bytes into `buf` (replacing what it held), so that a loop
    /// over a million files reuses one buffer. A length up to [`EAGER`] is
    /// allocated at once; a longer one grows only as its bytes arrive, so a
    /// damaged length cannot make the reader allocate gigabytes up front.
    pub(crate) fn take_into(&mut self, n: usize, buf: &mut Vec<u8>) -> Result<(), ImageError> {
        buf.clear();
        let got = if n <= EAGER {
            buf.resize(n, 0);
            let got = read_full(&mut self.r, buf).map_err(|e| self.err(format!("read failed: {e}")))?;
            buf.truncate(got);
            got
        } else {
            (&mut self.r).take(n as u64).read_to_end(buf).map_err(|e| self.err(format!("read failed: {e}")))?
        };
        if got < n {
            self.at += got;
            return Err(self.err(format!("truncated: {n} bytes needed, {got} left")));
        }
        self.hash.update(buf);
        self.at += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ImageError> {
        let mut a = [0u8; N];
        let got = read_full(&mut self.r, &mut a).map_err(|e| self.err(format!("read failed: {e}")))?;
        if got < N {
            self.at += got;
            return Err(self.err(format!("truncated: {N} bytes needed, {got} left")));
        }
        self.hash.update(&a);
        self.at += N;
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ImageError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ImageError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ImageError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, ImageError> {
        Ok(self.u64()? as i64)
    }

    pub(crate) fn chunk(&mut self) -> Result<Vec<u8>, ImageError> {
        let mut buf = Vec::new();
        self.chunk_into(&mut buf)?;
        Ok(buf)
    }

    /// A length-prefixed field, into `buf`.
    pub(crate) fn chunk_into(&mut self, buf: &mut Vec<u8>) -> Result<(), ImageError> {
        let n = self.u32()? as usize;
        if n > MAX_RECORD {
            return Err(self.err(format!("a length of {n} bytes is not plausible")));
        }
        self.take_into(n, buf)
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String, ImageError> {
        let at = self.at;
        String::from_utf8(self.chunk()?).map_err(|_| ImageError { offset: at, what: format!("{what} is not UTF-8") })
    }

    pub(crate) fn path(&mut self) -> Result<String, ImageError> {
        let mut buf = Vec::new();
        self.path_into(&mut buf)?;
        String::from_utf8(buf).map_err(|_| self.err("a path is not UTF-8"))
    }

    /// A path, checked, read into `buf`; returned as a `str` borrowed from it.
    pub(crate) fn path_into<'b>(&mut self, buf: &'b mut Vec<u8>) -> Result<&'b str, ImageError> {
        let at = self.at;
        self.chunk_into(buf)?;
        let p = std::str::from_utf8(buf).map_err(|_| ImageError { offset: at, what: "a path is not UTF-8".into() })?;
        if !is_valid_path(p) {
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
    body: &[u8],
    max_rev: Rev,
    at: usize,
) -> Result<(), ImageError> {
    if rev < 1 || rev > max_rev {
        return Err(ImageError { offset: at, what: format!("file {path} has revision {rev} outside 1..={max_rev}") });
    }
    let names: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // One walk down: refused if the path is taken.
    let twice = |there: Option<tree::Node>| if there.is_some() { Err(()) } else { Ok(()) };
    match tree::set_checked(root, &names, Body::with_rev(body, rev), twice) {
        Ok(_) => Ok(()),
        Err(tree::SetError::Refused(())) => Err(ImageError { offset: at, what: format!("file {path} appears twice") }),
        Err(tree::SetError::NotDir) => {
            Err(ImageError { offset: at, what: format!("file {path} lies below another file or is a directory") })
        }
    }
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
    let (mut path, mut body) = (Vec::new(), Vec::new());
    for _ in 0..input.u64()? {
        let at = input.at;
        let path = input.path_into(&mut path)?;
        let rev = input.i64()?;
        input.chunk_into(&mut body)?;
        add_file(&mut root, path, rev, &body, max_rev, at)?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out one byte per read, as a slow pipe might.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn field(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, bytes);
        out
    }

    #[test]
    fn fields_read_whole_from_a_reader_that_gives_a_byte_at_a_time() {
        let mut bytes = field(b"/a/b");
        bytes.extend_from_slice(&7u64.to_be_bytes());
        bytes.extend(field(&[b'x'; 100_000]));
        let mut input = Input::new(Trickle(&bytes));
        let mut buf = Vec::new();
        assert_eq!(input.path_into(&mut buf).unwrap(), "/a/b");
        assert_eq!(input.i64().unwrap(), 7);
        input.chunk_into(&mut buf).unwrap();
        assert_eq!(buf, vec![b'x'; 100_000], "a field past the eager size, read as it arrives");
        assert_eq!(input.at, bytes.len());
        let mut whole = Fnv::new();
        whole.update(&bytes);
        assert_eq!(input.hash.0, whole.0, "every byte read is in the checksum once");
    }

    #[test]
    fn a_length_past_the_bytes_there_are_is_truncation_at_its_offset() {
        for claimed in [10u32, 70_000, u32::MAX >> 1] {
            let mut bytes = claimed.to_be_bytes().to_vec();
            bytes.extend_from_slice(b"short");
            let mut input = Input::new(&bytes[..]);
            let e = input.chunk().unwrap_err();
            assert_eq!(e.offset, 9, "{claimed}: the offset where the bytes ran out");
            assert_eq!(e.what, format!("truncated: {claimed} bytes needed, 5 left"));
        }
        let e = Input::new(&[0u8, 0, 0][..]).u64().unwrap_err();
        assert_eq!((e.offset, e.what.as_str()), (3, "truncated: 8 bytes needed, 3 left"));
    }

    #[test]
    fn a_rebuilt_tree_refuses_a_file_twice_below_a_file_or_on_a_directory() {
        let mut root = Dir::new();
        add_file(&mut root, "/d/f", 1, b"one", 5, 0).unwrap();
        let twice = add_file(&mut root, "/d/f", 2, b"two", 5, 10).unwrap_err();
        assert_eq!((twice.offset, twice.what.as_str()), (10, "file /d/f appears twice"));
        let below = add_file(&mut root, "/d/f/g", 2, b"", 5, 20).unwrap_err();
        assert_eq!(below.offset, 20);
        assert!(below.what.contains("lies below another file"), "{}", below.what);
        let on_dir = add_file(&mut root, "/d", 2, b"", 5, 30).unwrap_err();
        assert_eq!(on_dir.offset, 30);
        let late = add_file(&mut root, "/e", 6, b"", 5, 40).unwrap_err();
        assert_eq!(late.what, "file /e has revision 6 outside 1..=5");
        let names = ["d", "f"];
        match tree::lookup(&root, &names) {
            tree::Lookup::Found(tree::Node::File(b)) => assert_eq!((&b[..], b.rev()), (&b"one"[..], 1)),
            _ => panic!("the first /d/f is kept as it was"),
        }
    }
}
