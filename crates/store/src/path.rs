//! Path syntax: `/` or one or more `/name` components, names from `[A-Za-z0-9.-]`.

/// Longest path or glob accepted, in bytes. The original had no limit.
pub const MAX_PATH: usize = 4096;

pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// True if `p` is a legal file or directory path (what SET and DEL accept).
pub fn is_valid_path(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    p.len() <= MAX_PATH
        && p.starts_with('/')
        && p[1..].split('/').all(|name| !name.is_empty() && name.bytes().all(is_name_byte))
}

/// The names along a valid path; empty for `/`.
pub(crate) fn components(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_paths() {
        for p in ["/", "/x", "/x/y", "/x/y-z", "/x/y.z", "/x/0", "/..", "/a/./b", "/A-Z.09"] {
            assert!(is_valid_path(p), "{p}");
        }
    }

    #[test]
    fn bad_paths() {
        for p in ["", "x", "/x=", "/x y", "/x/", "/x//y", "//", "/under_score", "/é", "/a*", "/a?b", "/a\0"] {
            assert!(!is_valid_path(p), "{p:?}");
        }
        assert!(!is_valid_path(&format!("/{}", "a".repeat(MAX_PATH))));
    }
}
