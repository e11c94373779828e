//! Glob patterns for WAIT and WALK, with the original's syntax and quirks.
//!
//! `?` is one character other than `/`, `*` is any run without `/`, `**` is any
//! run at all; everything else is literal and matching is anchored at both ends.
//! Stars pair left to right, so `***` is `**` then `*`. Matching is a dynamic
//! programme over (pattern position × path byte), so no pattern can make it
//! exponential.

use crate::path::{is_name_byte, MAX_PATH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Byte(u8),
    One,
    Star,
    StarStar,
}

/// A compiled glob.
#[derive(Clone, Debug)]
pub struct Glob {
    pattern: String,
    toks: Vec<Tok>,
    shape: Shape,
    /// Bytes before the first wildcard: every match is tested against them.
    prefix: usize,
}

/// The common shapes, matched without the DP: a watch on one file, or on
/// everything under a prefix (`/svc/**`), is tested against every event
/// by every watcher on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// No wildcard: the path must equal the pattern.
    Literal,
    /// A literal prefix and one `**` at the end: the path must start with the prefix.
    Under,
    Other,
}

/// A pattern that is not a legal glob; shown as `invalid glob pattern: <pat>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobError(pub String);

impl std::fmt::Display for GlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid glob pattern: {}", self.0)
    }
}

impl std::error::Error for GlobError {}

fn is_glob_byte(b: u8) -> bool {
    is_name_byte(b) || b == b'*' || b == b'?'
}

fn valid_shape(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    p.len() <= MAX_PATH
        && p.starts_with('/')
        && p[1..].split('/').all(|name| !name.is_empty() && name.bytes().all(is_glob_byte))
}

impl Glob {
    /// Compiles `pattern`, or says why it is not a glob.
    pub fn parse(pattern: &str) -> Result<Glob, GlobError> {
        if !valid_shape(pattern) {
            return Err(GlobError(pattern.to_string()));
        }
        let bytes = pattern.as_bytes();
        let mut toks = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let tok = match bytes[i] {
                b'*' if bytes.get(i + 1) == Some(&b'*') => {
                    i += 1;
                    Tok::StarStar
                }
                b'*' => Tok::Star,
                b'?' => Tok::One,
                b => Tok::Byte(b),
            };
            toks.push(tok);
            i += 1;
        }
        // Before the first wildcard a token is one byte of the pattern.
        let first_wild = toks.iter().position(|t| !matches!(t, Tok::Byte(_)));
        let shape = match first_wild {
            None => Shape::Literal,
            Some(i) if i + 1 == toks.len() && toks[i] == Tok::StarStar => Shape::Under,
            Some(_) => Shape::Other,
        };
        let prefix = first_wild.unwrap_or(pattern.len());
        Ok(Glob { pattern: pattern.to_string(), toks, shape, prefix })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The literal text before the first wildcard (the whole pattern if it has none).
    pub fn literal_prefix(&self) -> &str {
        &self.pattern[..self.prefix]
    }

    /// True if the pattern has no wildcard and so matches exactly one path.
    pub fn is_literal(&self) -> bool {
        self.literal_prefix().len() == self.pattern.len()
    }

    /// True if the whole of `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self.shape {
            Shape::Literal => path == self.pattern,
            Shape::Under => path.starts_with(self.literal_prefix()),
            Shape::Other => path.starts_with(self.literal_prefix()) && self.matches_by_dp(path),
        }
    }

    fn matches_by_dp(&self, path: &str) -> bool {
        let live = self.run(path.as_bytes());
        live[self.toks.len()]
    }

    /// True if some path that starts with `prefix` might match; used to prune walks.
    pub fn could_match_below(&self, prefix: &str) -> bool {
        self.run(prefix.as_bytes()).iter().any(|&b| b)
    }

    /// The set of pattern positions alive after consuming `input`.
    fn run(&self, input: &[u8]) -> Vec<bool> {
        let n = self.toks.len();
        let mut cur = vec![false; n + 1];
        cur[0] = true;
        self.close(&mut cur);
        let mut next = vec![false; n + 1];
        for &c in input {
            next.iter_mut().for_each(|b| *b = false);
            let mut any = false;
            for t in 0..n {
                if !cur[t] {
                    continue;
                }
                match self.toks[t] {
                    Tok::Byte(b) if b == c => next[t + 1] = true,
                    Tok::One if c != b'/' => next[t + 1] = true,
                    Tok::Star if c != b'/' => next[t] = true,
                    Tok::StarStar => next[t] = true,
                    _ => continue,
                }
                any = true;
            }
            std::mem::swap(&mut cur, &mut next);
            if !any {
                return cur;
            }
            self.close(&mut cur);
        }
        cur
    }

    /// Stars may match nothing: a live star position also makes the next one live.
    fn close(&self, live: &mut [bool]) {
        for t in 0..self.toks.len() {
            if live[t] && matches!(self.toks[t], Tok::Star | Tok::StarStar) {
                live[t + 1] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::parse(p).unwrap().matches(s)
    }

    #[test]
    fn original_examples() {
        for s in ["/a", "/ab", "/a/b", "/ab/c"] {
            assert!(m("/a**", s), "{s}");
        }
        for s in ["/", "/ba"] {
            assert!(!m("/a**", s), "{s}");
        }
        assert!(m("/a*", "/a") && m("/a*", "/abc") && !m("/a*", "/a/") && !m("/a*", "/a/b"));
        for s in ["/", "/a", "/a/b/c"] {
            assert!(m("/**", s), "{s}");
        }
        assert!(m("/a/**", "/a/b") && m("/a/**", "/a/b/c") && !m("/a/**", "/a"));
        assert!(m("/?", "/x") && !m("/?", "/") && !m("/?", "/xy"));
        assert!(m("/a/*/c", "/a/b/c") && !m("/a/*/c", "/a/b/d/c"));
        assert!(m("/x", "/x") && !m("/x", "/xy") && !m("/x", "/"));
        // Stars pair left to right: `***` is `**` then `*`.
        assert!(m("/***", "/a/b"));
        assert!(m("/a*b*c", "/aXbYc") && !m("/a*b*c", "/aXbY/c"));
    }

    #[test]
    fn bad_globs() {
        for p in ["", "a", "/a/", "//", "/a//b", "/a b", "/a_b", "/[ab]", "/a\\*"] {
            assert_eq!(Glob::parse(p).unwrap_err(), GlobError(p.to_string()), "{p:?}");
        }
        assert_eq!(GlobError("x".into()).to_string(), "invalid glob pattern: x");
    }

    #[test]
    fn literal_prefix_and_pruning() {
        let g = Glob::parse("/a/*/c").unwrap();
        assert_eq!(g.literal_prefix(), "/a/");
        assert!(g.could_match_below("/a/x/"));
        assert!(!g.could_match_below("/a/x/d/"));
        assert!(!g.could_match_below("/b/"));
        assert!(Glob::parse("/x/y").unwrap().is_literal());
        assert!(Glob::parse("/**").unwrap().could_match_below("/q/r/"));
    }

    #[test]
    fn the_shortcuts_agree_with_the_dp() {
        let patterns = ["/", "/a", "/a/b", "/a**", "/a/**", "/**", "/a/b**", "/a*", "/a/*", "/a?", "/***", "/a/**/b"];
        let paths = ["/", "/a", "/ab", "/a/", "/a/b", "/a/bc", "/a/b/c", "/b", "/ba/a", "/a/x/b", "/abc/d"];
        let mut shortcuts = 0;
        for p in patterns {
            let g = Glob::parse(p).unwrap();
            shortcuts += usize::from(g.shape != Shape::Other);
            for path in paths {
                assert_eq!(g.matches(path), g.matches_by_dp(path), "{p} against {path}");
            }
        }
        assert_eq!(shortcuts, 7, "the literal and prefix-** shapes take the shortcut");
        for (p, prefix) in [("/", "/"), ("/a/b", "/a/b"), ("/a/b**", "/a/b"), ("/a?", "/a"), ("/***", "/")] {
            assert_eq!(Glob::parse(p).unwrap().literal_prefix(), prefix, "{p}");
        }
    }

    #[test]
    fn huge_star_patterns_stay_fast() {
        let pat = format!("/{}", "*a".repeat(1000));
        let g = Glob::parse(&pat).unwrap();
        let path = format!("/{}", "a".repeat(3000));
        // A backtracking matcher would never finish these; the DP is quadratic at worst.
        assert!(g.matches(&path));
        assert!(!g.matches(&format!("{path}b")));
    }
}
