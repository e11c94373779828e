//! `doozer:?ca=HOST:PORT&ca=...&sk=SECRET` URIs (docs/protocol.md); a bare
//! `HOST:PORT` is accepted too. `cacert=FILE` (with `cert=FILE&key=FILE` for
//! a client certificate) makes the connection TLS, as the CLI's flags do.

use crate::Error;

/// A parsed cluster URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Cluster addresses (`ca`), in the order given.
    pub addrs: Vec<String>,
    /// Secret for ACCESS (`sk`).
    pub secret: Option<String>,
    /// Cluster name (`cn`), for DzNS lookups.
    pub name: Option<String>,
    /// TLS: the CA that signed the servers' certificates (`cacert`, a PEM file).
    pub cacert: Option<String>,
    /// TLS: a client certificate (`cert`, a PEM file), with `key`.
    pub cert: Option<String>,
    /// TLS: the client certificate's private key (`key`, a PEM file).
    pub key: Option<String>,
}

impl Uri {
    /// `opts` with the URI's TLS files, unless `opts` has TLS already.
    pub fn options(&self, opts: &crate::Options) -> Result<crate::Options, Error> {
        let mut opts = opts.clone();
        match (&self.cacert, &opts.tls) {
            (Some(ca), None) => {
                opts.tls = Some(crate::Tls::from_files(ca, self.cert.as_deref(), self.key.as_deref())?);
            }
            (None, None) if self.cert.is_some() || self.key.is_some() => {
                return Err(Error::Tls(
                    "cert= and key= in the uri need cacert=, the CA that signed the server's certificate".into(),
                ));
            }
            _ => {}
        }
        Ok(opts)
    }
}

fn unescape(s: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or(Error::InvalidUri)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| Error::InvalidUri)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Error::InvalidUri)
}

fn looks_like_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !host.contains('?') && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// Parses a `doozer:?…` URI or a bare `HOST:PORT`.
pub fn parse_uri(s: &str) -> Result<Uri, Error> {
    let mut uri = Uri { addrs: Vec::new(), secret: None, name: None, cacert: None, cert: None, key: None };
    let Some(query) = s.strip_prefix("doozer:?") else {
        if looks_like_host_port(s) {
            uri.addrs.push(s.to_string());
            return Ok(uri);
        }
        return Err(Error::InvalidUri);
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = unescape(v)?;
        match unescape(k)?.as_str() {
            "ca" => uri.addrs.push(v),
            "sk" => uri.secret = Some(v),
            "cn" => uri.name = Some(v),
            "cacert" => uri.cacert = Some(v),
            "cert" => uri.cert = Some(v),
            "key" => uri.key = Some(v),
            _ => {}
        }
    }
    // A cluster name alone is looked up in a DzNS (see `resolve`).
    if uri.addrs.is_empty() && uri.name.is_none() {
        return Err(Error::InvalidUri);
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let u = parse_uri("doozer:?ca=127.0.0.1:8046&ca=h:1&sk=s%3Dx&un=zz").unwrap();
        assert_eq!(u.addrs, ["127.0.0.1:8046", "h:1"]);
        assert_eq!(u.secret.as_deref(), Some("s=x"));
        assert_eq!(parse_uri("127.0.0.1:8046").unwrap().addrs, ["127.0.0.1:8046"]);
        assert_eq!(parse_uri("[::1]:8046").unwrap().addrs, ["[::1]:8046"]);
        let named = parse_uri("doozer:?cn=prod").unwrap();
        assert_eq!((named.addrs.len(), named.name.as_deref()), (0, Some("prod")));
        let tls = parse_uri("doozer:?ca=h:1&cacert=%2Fetc%2Fca.pem&cert=c.pem&key=k.pem").unwrap();
        assert_eq!(
            (tls.cacert.as_deref(), tls.cert.as_deref(), tls.key.as_deref()),
            (Some("/etc/ca.pem"), Some("c.pem"), Some("k.pem"))
        );
        let half = parse_uri("doozer:?ca=h:1&cert=c.pem&key=k.pem").unwrap();
        assert!(matches!(half.options(&crate::Options::default()), Err(Error::Tls(_))));
        assert!(parse_uri("h:1").unwrap().options(&crate::Options::default()).unwrap().tls.is_none());
        for bad in ["", "doozer:", "doozer:?sk=x", "http://x", "host", "doozer?:ca=h:1", "doozer:?ca=%zz"] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }
}
