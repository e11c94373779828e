//! What the commands print: the original's text formats byte for byte, or,
//! with `--json` (`-w json`), one JSON object per line.
//!
//! JSON objects, by what they describe:
//! - a file: `{"path","rev","len","body"}`, `body_base64` instead of `body`
//!   when the body is not UTF-8; a missing file has `"rev":0,"exists":false`;
//! - a change (wait, watch, log): the same plus `"kind":"set"|"del"|"nop"`;
//! - a revision (set, add, rev, backup): `{"rev"}`, with `"path"` for writes;
//! - a directory entry (find, stat): `{"path","dir":true,"entries"}`.

use crate::Failure;
use base64::Engine;
use doozer_client::Event;
use serde_json::{json, Map, Value};
use std::io::Write;

/// Prints to stdout in the chosen format.
#[derive(Clone, Copy)]
pub struct Out {
    pub json: bool,
}

/// Writes and flushes stdout; a closed pipe is an error like any other.
pub fn write_out(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).map_err(|e| Failure::Message(format!("write stdout: {e}")))
}

fn line(v: Value) -> Result<(), Failure> {
    write_out(format!("{v}\n").as_bytes())
}

/// `body` or `body_base64`, as the HTTP API gives them.
fn with_body(mut m: Map<String, Value>, body: &[u8]) -> Value {
    m.insert("len".into(), json!(body.len()));
    match std::str::from_utf8(body) {
        Ok(text) => m.insert("body".into(), json!(text)),
        Err(_) => m.insert("body_base64".into(), json!(base64::engine::general_purpose::STANDARD.encode(body))),
    };
    Value::Object(m)
}

fn kind(e: &Event) -> &'static str {
    if e.is_set() {
        "set"
    } else if e.is_del() {
        "del"
    } else {
        ""
    }
}

impl Out {
    /// A revision: `set`, `add`, `rev` and `backup` print it on its own line.
    pub fn rev(self, path: Option<&str>, rev: i64) -> Result<(), Failure> {
        if !self.json {
            return write_out(format!("{rev}\n").as_bytes());
        }
        match path {
            Some(p) => line(json!({"path": p, "rev": rev})),
            None => line(json!({"rev": rev})),
        }
    }

    /// A file's body, verbatim (nothing for a missing file, as the original).
    pub fn file(self, path: &str, rev: i64, body: &[u8]) -> Result<(), Failure> {
        if !self.json {
            return write_out(body);
        }
        if rev == 0 {
            return line(json!({"path": path, "rev": 0, "exists": false}));
        }
        let mut m = Map::new();
        m.insert("path".into(), json!(path));
        m.insert("rev".into(), json!(rev));
        line(with_body(m, body))
    }

    /// A change, in the record format `<path> <rev> <set|del> <len>\n<body>\n`.
    pub fn event(self, e: &Event) -> Result<(), Failure> {
        if self.json {
            let mut m = Map::new();
            m.insert("path".into(), json!(e.path));
            m.insert("rev".into(), json!(e.rev));
            m.insert("kind".into(), json!(if kind(e).is_empty() { "nop" } else { kind(e) }));
            return line(with_body(m, &e.body));
        }
        let mut record = format!("{} {} {} {}\n", e.path, e.rev, kind(e), e.body.len()).into_bytes();
        record.extend_from_slice(&e.body);
        record.push(b'\n');
        write_out(&record)
    }

    /// `stat`: `<rev> <len>` for a file, `d <entries>` for a directory.
    pub fn stat(self, path: &str, len: i32, rev: i64) -> Result<(), Failure> {
        match (self.json, rev) {
            (false, -2) => write_out(format!("d {len}\n").as_bytes()),
            (false, _) => write_out(format!("{rev} {len}\n").as_bytes()),
            (true, -2) => line(json!({"path": path, "dir": true, "entries": len})),
            (true, _) => line(json!({"path": path, "rev": rev, "len": len})),
        }
    }

    /// One path found by `find`.
    pub fn found(self, path: &str, dir: bool) -> Result<(), Failure> {
        if self.json {
            line(json!({"path": path, "dir": dir}))
        } else {
            write_out(format!("{path}\n").as_bytes())
        }
    }

    /// The node's id: without a newline, as the original.
    pub fn id(self, id: &[u8]) -> Result<(), Failure> {
        if self.json {
            line(json!({"id": String::from_utf8_lossy(id)}))
        } else {
            write_out(id)
        }
    }

    /// A table row of `members` or `status`, or its JSON object.
    pub fn row(self, text: &str, object: Value) -> Result<(), Failure> {
        if self.json {
            line(object)
        } else {
            write_out(text.as_bytes())
        }
    }
}
