//! `stun:` URLs (RFC 7064): `stun:host[:port]`, with IPv6 literals in
//! brackets and 3478 as the default port.

use voice_core::Error;

/// A parsed `stun:` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StunUrl {
    pub host: String,
    pub port: u16,
}

pub const DEFAULT_STUN_PORT: u16 = 3478;
const MAX_URL_BYTES: usize = 512;

impl StunUrl {
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad =
            |why: &str| Error::bad_request(format!("{url:?} is not a stun:host[:port] URL: {why}"));
        if url.len() > MAX_URL_BYTES {
            return Err(bad("too long"));
        }
        let rest = url
            .strip_prefix("stun:")
            .ok_or_else(|| bad("it must start with stun:"))?;
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match after {
                "" => None,
                other => Some(other.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (host, port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        if !valid_host {
            return Err(bad("bad host"));
        }
        let port = match port {
            None => DEFAULT_STUN_PORT,
            Some(port) => port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("bad port"))?,
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }

    /// `host:port` for name resolution.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_ipv6() {
        assert_eq!(
            StunUrl::parse("stun:stun.example.com").unwrap(),
            StunUrl {
                host: "stun.example.com".into(),
                port: 3478
            }
        );
        assert_eq!(StunUrl::parse("stun:127.0.0.1:19302").unwrap().port, 19302);
        let v6 = StunUrl::parse("stun:[::1]:3479").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 3479));
        assert_eq!(v6.authority(), "[::1]:3479");
        for bad in [
            "turn:x:1",
            "stun:",
            "stun:host:0",
            "stun:host:99999",
            "stun:[::1",
            "stun:a b",
            "stun:h/x",
        ] {
            assert!(StunUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
