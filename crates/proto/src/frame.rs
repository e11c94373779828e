//! Length-prefixed framing: a 4-byte big-endian signed length, then that many bytes.
//!
//! The original read the length into an `int32` and allocated it blindly, so a
//! negative length crashed the server. Here a negative or oversized length is a
//! `FrameError` and the caller closes the connection.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest body (value) a SET may carry: 1 MiB.
pub const MAX_VALUE: usize = 1 << 20;

/// The largest frame body either side accepts: a 1 MiB value plus room for the
/// path (at most 4 KiB) and the other fields.
pub const MAX_FRAME: usize = (1 << 20) + 64 * 1024;

/// Why a frame could not be read; after any of these the stream is unusable.
#[derive(Debug)]
pub enum FrameError {
    /// The length prefix is negative or larger than the allowed maximum.
    BadLength(i64),
    /// The stream ended inside a frame.
    Truncated,
    /// The underlying read failed.
    Io(std::io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadLength(n) => write!(f, "bad frame length {n}"),
            FrameError::Truncated => f.write_str("connection closed inside a frame"),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// What a length prefix that is no frame says about the other side, for a
/// person: an HTTP server (the web port) answers `HTTP`, a TLS server an alert.
pub fn explain_bad_length(n: i64) -> Option<&'static str> {
    let b = (n as u32).to_be_bytes();
    if &b == b"HTTP" {
        Some("that address speaks HTTP, not the Doozer protocol (the web view's port? clients use doozerd's -l port, 8046 by default)")
    } else if matches!(b[0], 0x15 | 0x16) && b[1] == 0x03 {
        Some("that address speaks TLS: give the CA that signed its certificate (--cacert FILE)")
    } else {
        None
    }
}

/// Reads one frame body. `Ok(None)` is a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<Bytes>, FrameError> {
    match read_prefix(r).await? {
        None => Ok(None),
        Some(prefix) => read_body(r, prefix, max).await.map(Some),
    }
}

/// Reads a frame's 4-byte length prefix; `Ok(None)` at a clean end of stream.
pub async fn read_prefix<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<[u8; 4]>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await.map_err(FrameError::Io)?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(FrameError::Truncated) };
        }
        got += n;
    }
    Ok(Some(len))
}

/// Reads the body that `prefix` announced, refusing negative or oversized lengths.
pub async fn read_body<R: AsyncRead + Unpin>(r: &mut R, prefix: [u8; 4], max: usize) -> Result<Bytes, FrameError> {
    let n = i32::from_be_bytes(prefix);
    if n < 0 || n as usize > max {
        return Err(FrameError::BadLength(n.into()));
    }
    // The buffer grows as bytes arrive: a length prefix alone (a client that
    // announces a megabyte and sends nothing) reserves at most FIRST_READ.
    let n = n as usize;
    let truncated = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    };
    if n <= FIRST_READ {
        // The common case, exactly sized: no growth, no copy.
        let mut body = BytesMut::zeroed(n);
        r.read_exact(&mut body).await.map_err(truncated)?;
        return Ok(body.freeze());
    }
    let mut body = Vec::with_capacity(FIRST_READ);
    let got = r.take(n as u64).read_to_end(&mut body).await.map_err(FrameError::Io)?;
    if got < n {
        return Err(FrameError::Truncated);
    }
    Ok(Bytes::from(body))
}

/// Most bytes reserved for a frame body before any of it has arrived.
const FIRST_READ: usize = 16 * 1024;

/// Appends `msg` as one frame (length prefix + protobuf body) to `dst`.
pub fn encode_frame<M: Message>(msg: &M, dst: &mut BytesMut) {
    let len = msg.encoded_len();
    dst.reserve(4 + len);
    dst.put_u32(len as u32);
    // Cannot fail: the buffer was reserved for exactly this length.
    let _ = msg.encode(dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;

    async fn read_all(bytes: &[u8]) -> Result<Option<Bytes>, FrameError> {
        let mut r = bytes;
        read_frame(&mut r, 100).await
    }

    #[tokio::test]
    async fn round_trip() {
        let req = Request { tag: Some(7), verb: Some(1), path: Some("/x".into()), rev: Some(-1), ..Default::default() };
        let mut buf = BytesMut::new();
        encode_frame(&req, &mut buf);
        assert_eq!(&buf[..4], &(buf.len() as u32 - 4).to_be_bytes());
        let body = read_all(&buf).await.unwrap().unwrap();
        assert_eq!(Request::decode(body).unwrap(), req);
    }

    #[tokio::test]
    async fn rejects_negative_and_oversized_lengths() {
        assert!(matches!(read_all(&(-1i32).to_be_bytes()).await, Err(FrameError::BadLength(-1))));
        assert!(matches!(read_all(&i32::MIN.to_be_bytes()).await, Err(FrameError::BadLength(_))));
        assert!(matches!(read_all(&101i32.to_be_bytes()).await, Err(FrameError::BadLength(101))));
    }

    #[tokio::test]
    async fn clean_eof_and_truncation() {
        assert!(matches!(read_all(&[]).await, Ok(None)));
        assert!(matches!(read_all(&[0, 0]).await, Err(FrameError::Truncated)));
        assert!(matches!(read_all(&[0, 0, 0, 5, 1, 2]).await, Err(FrameError::Truncated)));
        assert_eq!(read_all(&[0, 0, 0, 0]).await.unwrap().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_claimed_length_reserves_memory_only_as_bytes_arrive() {
        // 8 bytes announced as a full frame: the read ends Truncated, and the
        // bytes that came are all it held (checked through a reader that
        // reports how much room it was offered).
        struct Offered<'a>(&'a [u8], usize);
        impl tokio::io::AsyncRead for Offered<'_> {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.1 = self.1.max(buf.remaining());
                let n = self.0.len().min(buf.remaining());
                buf.put_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                std::task::Poll::Ready(Ok(()))
            }
        }
        let mut r = Offered(&[1; 8], 0);
        let prefix = (MAX_FRAME as i32).to_be_bytes();
        assert!(matches!(read_body(&mut r, prefix, MAX_FRAME).await, Err(FrameError::Truncated)));
        assert!(r.1 <= FIRST_READ, "offered {} bytes before any arrived", r.1);
    }
}
