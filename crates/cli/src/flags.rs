//! Global flags, parsed the way Go's `flag` package does (the original CLI's):
//! `-a v`, `-a=v`, `--a v`; parsing stops at the first argument that is not a
//! flag, so `doozer set /x -1` keeps `-1` as an argument. The same flags are
//! parsed again after the command name, so they work before or after it.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Flags {
    pub uri: String,
    pub boot: String,
    pub rev: i64,
    pub timeout: Duration,
    pub help: bool,
    pub version: bool,
    /// `--json` or `-w json`: one JSON object per line instead of the original's text.
    pub json: bool,
    /// TLS: the CA certificate(s) to trust, and a client certificate and key.
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// `-ttl N`: the lease TTL in seconds of `lock` and `elect` (default 10).
    pub ttl: i64,
    /// `-lease ID`: `set` attaches the file to this lease (hex, as printed).
    pub lease: Option<String>,
    /// `-l`: `elect` observes instead of campaigning.
    pub observe: bool,
}

/// Flags that take no value.
const SWITCHES: &[&str] = &["h", "help", "v", "version", "json", "l"];

impl Flags {
    pub fn from_env() -> Flags {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Flags {
            uri: env("DOOZER_URI").unwrap_or_else(|| "doozer:?ca=127.0.0.1:8046".to_string()),
            boot: env("DOOZER_BOOT_URI").unwrap_or_default(),
            rev: -1,
            timeout: Duration::ZERO,
            help: false,
            version: false,
            json: false,
            cacert: env("DOOZER_CACERT"),
            cert: env("DOOZER_CERT"),
            key: env("DOOZER_KEY"),
            ttl: 10,
            lease: None,
            observe: false,
        }
    }

    /// Parses leading flags off `args`; returns the rest, or a usage error.
    pub fn parse(&mut self, args: &[String]) -> Result<Vec<String>, String> {
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if a == "--" {
                i += 1;
                break;
            }
            if a.len() < 2 || !a.starts_with('-') {
                break;
            }
            let body = a.trim_start_matches('-');
            if a.starts_with("---") || body.is_empty() {
                return Err(format!("bad flag syntax: {a}"));
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            i += 1;
            if SWITCHES.contains(&name) {
                let on = match inline.as_deref() {
                    None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
                    Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
                    Some(v) => return Err(format!("invalid boolean value {v:?} for -{name}")),
                };
                match name {
                    "v" | "version" => self.version = on,
                    "json" => self.json = on,
                    "l" => self.observe = on,
                    _ => self.help = on,
                }
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    let v = args.get(i).cloned().ok_or_else(|| format!("flag needs an argument: -{name}"))?;
                    i += 1;
                    v
                }
            };
            match name {
                "a" => self.uri = value,
                "b" => self.boot = value,
                "r" => {
                    self.rev = value.parse().map_err(|_| format!("invalid value {value:?} for flag -r: parse error"))?
                }
                "t" => {
                    self.timeout = parse_duration(&value)
                        .ok_or_else(|| format!("invalid value {value:?} for flag -t: parse error"))?
                }
                "w" => match value.as_str() {
                    "json" => self.json = true,
                    "simple" | "text" => self.json = false,
                    _ => return Err(format!("invalid value {value:?} for flag -w: json or simple")),
                },
                "cacert" => self.cacert = Some(value),
                "cert" => self.cert = Some(value),
                "key" => self.key = Some(value),
                "ttl" => {
                    self.ttl = value
                        .parse()
                        .map_err(|_| format!("invalid value {value:?} for flag -ttl: seconds, 1 to 86400"))?
                }
                "lease" => self.lease = Some(value),
                _ => return Err(format!("flag provided but not defined: -{name}")),
            }
        }
        Ok(args[i..].to_vec())
    }
}

/// A Go duration: `300ms`, `2s`, `1m30s`, `1.5h`, or `0`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_style_flags() {
        let mut f = Flags::from_env();
        let rest = f.parse(&strings(&["-a", "doozer:?ca=x:1", "-r=5", "--t", "2s", "set", "/x", "-1"])).unwrap();
        assert_eq!(rest, ["set", "/x", "-1"]);
        assert_eq!((f.uri.as_str(), f.rev, f.timeout), ("doozer:?ca=x:1", 5, Duration::from_secs(2)));
        let rest = f.parse(&strings(&["/x", "-1"])).unwrap();
        assert_eq!(rest, ["/x", "-1"]);
        assert!(f.parse(&strings(&["-z"])).is_err());
        assert!(f.parse(&strings(&["-r"])).is_err());
        let rest = f.parse(&strings(&["-h", "--", "-x"])).unwrap();
        assert!(f.help);
        assert_eq!(rest, ["-x"]);
        let rest = f.parse(&strings(&["--json", "-w", "json", "--version", "--cacert=ca.pem", "get"])).unwrap();
        assert_eq!(rest, ["get"]);
        assert!(f.json && f.version);
        assert_eq!(f.cacert.as_deref(), Some("ca.pem"));
        assert!(f.parse(&strings(&["-w", "yaml"])).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("x"), None);
    }
}
