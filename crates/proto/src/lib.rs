//! The Doozer client wire protocol, byte for byte.
//!
//! What it is for: the `Request`/`Response` protobuf messages with the original
//! field numbers and proto2 presence, the verb and error numbers, and the 4-byte
//! big-endian length-prefixed framing. Both the server and the client use it.
//!
//! What it is not: it knows nothing of what a verb means; that is the server's
//! and the store's business.

mod frame;
mod msg;

pub use frame::{
    encode_frame, explain_bad_length, read_body, read_frame, read_prefix, FrameError, MAX_FRAME, MAX_VALUE,
};
pub use msg::{ErrCode, Request, Response, Verb, FLAG_DEL, FLAG_SET};
