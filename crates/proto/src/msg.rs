//! Protobuf messages of the current protocol (v0.6 + ACCESS + SELF), and
//! the extensions: LOG, the lease verbs and their fields (numbers the
//! original never used; docs/protocol.md).
//!
//! Derived by hand with prost: every field is proto2 `optional`, so an absent
//! `rev` (`None`) is distinguishable from `rev = 0`. Verb and error are carried
//! as plain `int32` so that any integer decodes, as goprotobuf of the time did;
//! the server answers unknown verbs with UNKNOWN_VERB instead of failing to decode.

use bytes::Bytes;

/// WAIT/WALK response flag: the file was created or changed.
pub const FLAG_SET: i32 = 4;
/// WAIT response flag: the file was deleted.
pub const FLAG_DEL: i32 = 8;

/// A client request (`server.Request` in doozerd's `msg.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(int32, optional, tag = "1")]
    pub tag: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub verb: Option<i32>,
    #[prost(string, optional, tag = "4")]
    pub path: Option<String>,
    #[prost(bytes = "bytes", optional, tag = "5")]
    pub value: Option<Bytes>,
    #[prost(int32, optional, tag = "6")]
    pub other_tag: Option<i32>,
    #[prost(int32, optional, tag = "7")]
    pub offset: Option<i32>,
    #[prost(int64, optional, tag = "9")]
    pub rev: Option<i64>,
    /// Extension (field 103): the lease a lease verb is about, or (GRANT)
    /// the id asked for. Ids are positive.
    #[prost(int64, optional, tag = "103")]
    pub lease: Option<i64>,
    /// Extension (field 104): GRANT's time to live, in seconds.
    #[prost(int64, optional, tag = "104")]
    pub ttl: Option<i64>,
}

/// A server response (`server.Response`). Its `len` field is STAT's answer,
/// not a collection length.
#[allow(clippy::len_without_is_empty)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(int32, optional, tag = "1")]
    pub tag: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub flags: Option<i32>,
    #[prost(int64, optional, tag = "3")]
    pub rev: Option<i64>,
    #[prost(string, optional, tag = "5")]
    pub path: Option<String>,
    #[prost(bytes = "bytes", optional, tag = "6")]
    pub value: Option<Bytes>,
    #[prost(int32, optional, tag = "8")]
    pub len: Option<i32>,
    #[prost(int32, optional, tag = "100")]
    pub err_code: Option<i32>,
    #[prost(string, optional, tag = "101")]
    pub err_detail: Option<String>,
    /// Extension (field 102, unknown to the original and ignored by its
    /// clients): set on an error answer to a write that may still be applied
    /// (it was proposed but not known to be committed in time). Absent: the
    /// write was not carried out.
    #[prost(bool, optional, tag = "102")]
    pub indeterminate: Option<bool>,
    /// Extension (field 103): the lease an answer is about.
    #[prost(int64, optional, tag = "103")]
    pub lease: Option<i64>,
    /// Extension (field 104): seconds a lease has left (TTL, rounded up;
    /// 0: expiring), or its full TTL (GRANT, KEEPALIVE).
    #[prost(int64, optional, tag = "104")]
    pub ttl: Option<i64>,
    /// Extension (field 105): the TTL a lease was granted, in seconds.
    #[prost(int64, optional, tag = "105")]
    pub granted: Option<i64>,
}

impl Response {
    /// An error response: only `tag`, `err_code` and, if non-empty, `err_detail`.
    pub fn error(tag: Option<i32>, code: ErrCode, detail: impl Into<String>) -> Response {
        let detail = detail.into();
        Response {
            tag,
            err_code: Some(code as i32),
            err_detail: (!detail.is_empty()).then_some(detail),
            ..Response::default()
        }
    }

    /// An error answer to a write that was proposed and may still be applied.
    pub fn error_indeterminate(tag: Option<i32>, code: ErrCode, detail: impl Into<String>) -> Response {
        Response { indeterminate: Some(true), ..Response::error(tag, code, detail) }
    }

    /// The error carried by this response, if any.
    pub fn err(&self) -> Option<ErrCode> {
        self.err_code.map(ErrCode::from_i32)
    }
}

/// Request verbs with their wire numbers (`Request.Verb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Verb {
    Get = 1,
    Set = 2,
    Del = 3,
    Rev = 5,
    Wait = 6,
    Nop = 7,
    Walk = 9,
    Getdir = 14,
    Stat = 16,
    SelfId = 20,
    /// Extension (the original never used 30): the `offset`-th newest change
    /// to a file matching the glob `path`, at or before `rev` (default: now),
    /// within the history window; RANGE past the oldest. See docs/protocol.md.
    Log = 30,
    /// Extensions for leases (docs/protocol.md): GRANT a lease of `ttl`
    /// seconds (answer: `lease`, `ttl`).
    Grant = 31,
    /// Keep `lease` alive for another TTL (answer: `ttl`).
    KeepAlive = 32,
    /// Revoke `lease`, deleting its files in one revision (answer: `rev`).
    Revoke = 33,
    /// How long `lease` has left (`ttl`, `granted`, `len` = its files; with
    /// `offset`, `path` = its `offset`-th file, RANGE past the last).
    Ttl = 34,
    /// SET, the file attached to `lease`: deleted when the lease ends.
    SetLeased = 35,
    /// The `offset`-th granted lease (`lease`, `granted`, `len`); RANGE past the last.
    Leases = 36,
    /// Extension for disaster recovery (docs/protocol.md): with `rev` 0,
    /// what forcing a new cluster on this node would do (`value`); with
    /// `rev` 1, do it. Refused (OTHER) while a majority of voters answers.
    ForceNewCluster = 37,
    /// Extension for watching (docs/protocol.md): every change to a file
    /// matching the glob `path` at or after `rev`, each answered under this
    /// request's tag, until STOP or an error (TOO_LATE, OTHER), which carries
    /// `rev`, the first revision not sent.
    Stream = 38,
    /// Ends the STREAM whose tag is `other_tag`; no event of it follows this answer.
    Stop = 39,
    Access = 99,
}

impl Verb {
    /// The verb for a wire number; `None` for removed or unknown verbs.
    pub fn from_i32(n: i32) -> Option<Verb> {
        Some(match n {
            1 => Verb::Get,
            2 => Verb::Set,
            3 => Verb::Del,
            5 => Verb::Rev,
            6 => Verb::Wait,
            7 => Verb::Nop,
            9 => Verb::Walk,
            14 => Verb::Getdir,
            16 => Verb::Stat,
            20 => Verb::SelfId,
            30 => Verb::Log,
            31 => Verb::Grant,
            32 => Verb::KeepAlive,
            33 => Verb::Revoke,
            34 => Verb::Ttl,
            35 => Verb::SetLeased,
            36 => Verb::Leases,
            37 => Verb::ForceNewCluster,
            38 => Verb::Stream,
            39 => Verb::Stop,
            99 => Verb::Access,
            _ => return None,
        })
    }

    /// Upper-case name as in `msg.proto`, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Set => "SET",
            Verb::Del => "DEL",
            Verb::Rev => "REV",
            Verb::Wait => "WAIT",
            Verb::Nop => "NOP",
            Verb::Walk => "WALK",
            Verb::Getdir => "GETDIR",
            Verb::Stat => "STAT",
            Verb::SelfId => "SELF",
            Verb::Log => "LOG",
            Verb::Grant => "GRANT",
            Verb::KeepAlive => "KEEPALIVE",
            Verb::Revoke => "REVOKE",
            Verb::Ttl => "TTL",
            Verb::SetLeased => "SETL",
            Verb::Leases => "LEASES",
            Verb::ForceNewCluster => "FORCE_NEW_CLUSTER",
            Verb::Stream => "STREAM",
            Verb::Stop => "STOP",
            Verb::Access => "ACCESS",
        }
    }
}

/// Response error codes with their wire numbers (`Response.Err`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrCode {
    TagInUse = 1,
    UnknownVerb = 2,
    Readonly = 3,
    TooLate = 4,
    RevMismatch = 5,
    BadPath = 6,
    MissingArg = 7,
    Range = 8,
    NotDir = 20,
    IsDir = 21,
    NoEnt = 22,
    Other = 127,
}

impl ErrCode {
    /// Maps a wire number to a code; numbers this protocol does not define read as OTHER.
    pub fn from_i32(n: i32) -> ErrCode {
        match n {
            1 => ErrCode::TagInUse,
            2 => ErrCode::UnknownVerb,
            3 => ErrCode::Readonly,
            4 => ErrCode::TooLate,
            5 => ErrCode::RevMismatch,
            6 => ErrCode::BadPath,
            7 => ErrCode::MissingArg,
            8 => ErrCode::Range,
            20 => ErrCode::NotDir,
            21 => ErrCode::IsDir,
            22 => ErrCode::NoEnt,
            _ => ErrCode::Other,
        }
    }

    /// The enum name, exactly as the Go client prints it (`REV_MISMATCH`).
    pub fn name(self) -> &'static str {
        match self {
            ErrCode::TagInUse => "TAG_IN_USE",
            ErrCode::UnknownVerb => "UNKNOWN_VERB",
            ErrCode::Readonly => "READONLY",
            ErrCode::TooLate => "TOO_LATE",
            ErrCode::RevMismatch => "REV_MISMATCH",
            ErrCode::BadPath => "BAD_PATH",
            ErrCode::MissingArg => "MISSING_ARG",
            ErrCode::Range => "RANGE",
            ErrCode::NotDir => "NOTDIR",
            ErrCode::IsDir => "ISDIR",
            ErrCode::NoEnt => "NOENT",
            ErrCode::Other => "OTHER",
        }
    }
}

impl std::fmt::Display for ErrCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn absent_rev_differs_from_zero() {
        let absent = Request { tag: Some(1), verb: Some(1), ..Default::default() };
        let zero = Request { rev: Some(0), ..absent.clone() };
        assert_ne!(absent.encode_to_vec(), zero.encode_to_vec());
        assert_eq!(Request::decode(&zero.encode_to_vec()[..]).unwrap().rev, Some(0));
        assert_eq!(Request::decode(&absent.encode_to_vec()[..]).unwrap().rev, None);
    }

    #[test]
    fn negative_rev_is_ten_byte_varint() {
        let r = Request { rev: Some(-1), ..Default::default() };
        // field 9, wire type 0 = 0x48, then 10 bytes of sign-extended varint.
        assert_eq!(r.encode_to_vec(), [0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn field_numbers_match_msg_proto() {
        let r = Response {
            tag: Some(1),
            flags: Some(4),
            rev: Some(3),
            path: Some("/a".into()),
            value: Some(Bytes::from_static(b"v")),
            len: Some(1),
            err_code: Some(127),
            err_detail: Some("x".into()),
            indeterminate: Some(true),
            lease: Some(9),
            ttl: Some(5),
            granted: Some(10),
        };
        let bytes = r.encode_to_vec();
        let expect: &[u8] = &[
            0x08, 1, // tag
            0x10, 4, // flags
            0x18, 3, // rev
            0x2a, 2, b'/', b'a', // path (5)
            0x32, 1, b'v', // value (6)
            0x40, 1, // len (8)
            0xa0, 0x06, 127, // err_code (100)
            0xaa, 0x06, 1, b'x', // err_detail (101)
            0xb0, 0x06, 1, // indeterminate (102, the extension)
            0xb8, 0x06, 9, // lease (103)
            0xc0, 0x06, 5, // ttl (104)
            0xc8, 0x06, 10, // granted (105)
        ];
        assert_eq!(bytes, expect);
    }

    #[test]
    fn unknown_verb_number_still_decodes() {
        let bytes = Request { verb: Some(4242), ..Default::default() }.encode_to_vec();
        let r = Request::decode(&bytes[..]).unwrap();
        assert_eq!(r.verb, Some(4242));
        assert_eq!(Verb::from_i32(4242), None);
    }

    #[test]
    fn verb_and_error_numbers() {
        for (v, n) in [
            (Verb::Get, 1),
            (Verb::Set, 2),
            (Verb::Del, 3),
            (Verb::Rev, 5),
            (Verb::Wait, 6),
            (Verb::Nop, 7),
            (Verb::Walk, 9),
            (Verb::Getdir, 14),
            (Verb::Stat, 16),
            (Verb::SelfId, 20),
            (Verb::Log, 30),
            (Verb::Grant, 31),
            (Verb::KeepAlive, 32),
            (Verb::Revoke, 33),
            (Verb::Ttl, 34),
            (Verb::SetLeased, 35),
            (Verb::Leases, 36),
            (Verb::ForceNewCluster, 37),
            (Verb::Stream, 38),
            (Verb::Stop, 39),
            (Verb::Access, 99),
        ] {
            assert_eq!(v as i32, n);
            assert_eq!(Verb::from_i32(n), Some(v));
        }
        for n in [0, 4, 8, 10] {
            assert_eq!(Verb::from_i32(n), None, "removed verb {n}");
        }
        for (e, n) in [
            (ErrCode::TagInUse, 1),
            (ErrCode::UnknownVerb, 2),
            (ErrCode::Readonly, 3),
            (ErrCode::TooLate, 4),
            (ErrCode::RevMismatch, 5),
            (ErrCode::BadPath, 6),
            (ErrCode::MissingArg, 7),
            (ErrCode::Range, 8),
            (ErrCode::NotDir, 20),
            (ErrCode::IsDir, 21),
            (ErrCode::NoEnt, 22),
            (ErrCode::Other, 127),
        ] {
            assert_eq!(e as i32, n);
            assert_eq!(ErrCode::from_i32(n), e);
        }
    }

    proptest::proptest! {
        #[test]
        fn request_round_trips(tag in proptest::option::of(proptest::num::i32::ANY),
                               verb in proptest::option::of(proptest::num::i32::ANY),
                               path in proptest::option::of(".*"),
                               value in proptest::option::of(proptest::collection::vec(0u8.., 0..64)),
                               offset in proptest::option::of(proptest::num::i32::ANY),
                               rev in proptest::option::of(proptest::num::i64::ANY)) {
            let r = Request { tag, verb, path, value: value.map(Bytes::from), other_tag: None, offset, rev, lease: None, ttl: None };
            let back = Request::decode(&r.encode_to_vec()[..]).unwrap();
            proptest::prop_assert_eq!(back, r);
        }

        #[test]
        fn response_round_trips(tag in proptest::option::of(proptest::num::i32::ANY),
                                flags in proptest::option::of(0i32..16),
                                rev in proptest::option::of(proptest::num::i64::ANY),
                                len in proptest::option::of(proptest::num::i32::ANY),
                                code in proptest::option::of(proptest::num::i32::ANY)) {
            let r = Response { tag, flags, rev, len, err_code: code, path: Some("/p".into()), ..Default::default() };
            let back = Response::decode(&r.encode_to_vec()[..]).unwrap();
            proptest::prop_assert_eq!(back, r);
        }
    }
}
