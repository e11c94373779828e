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

/// What is wrong with a path that [`is_valid_path`] refuses, in words for
/// people; `None` if it is valid.
pub fn path_problem(p: &str) -> Option<String> {
    if is_valid_path(p) {
        return None;
    }
    const RULE: &str = "names use only A-Z a-z 0-9 . and -";
    Some(if p.len() > MAX_PATH {
        format!("the path is {} bytes; at most {MAX_PATH}", p.len())
    } else if !p.starts_with('/') {
        format!("{p:?} does not start with /: paths are absolute, like /config/db")
    } else if p.ends_with('/') {
        format!("{p:?} ends with /: name the file, like /config/db")
    } else if p.contains("//") {
        format!("{p:?} has an empty name (//)")
    } else {
        let bad = p.chars().find(|c| *c != '/' && !(c.is_ascii() && is_name_byte(*c as u8))).unwrap_or('?');
        format!("{p:?} has the character {bad:?}: {RULE}")
    })
}

/// The names along a valid path; empty for `/`.
pub(crate) fn components(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn problems_are_named() {
        use super::path_problem;
        assert_eq!(path_problem("/a/b"), None);
        assert!(path_problem("a").unwrap().contains("does not start with /"));
        assert!(path_problem("/a/").unwrap().contains("ends with /"));
        assert!(path_problem("/a//b").unwrap().contains("empty name"));
        assert!(path_problem("/under_score").unwrap().contains("'_'"));
        assert!(path_problem(&"/a".repeat(3000)).unwrap().contains("at most 4096"));
    }

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
