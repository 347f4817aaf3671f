//! ICE server URLs: `stun:host[:port]` (RFC 7064) and
//! `turn:host[:port][?transport=udp|tcp]` (RFC 7065), with IPv6 literals in
//! brackets and 3478 as the default port. The server checks the STUN URLs
//! an admin configures with it; clients parse what `GET /v1/ice-servers`
//! hands out.

use crate::Error;

/// A parsed `stun:` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StunUrl {
    pub host: String,
    pub port: u16,
}

/// A parsed `turn:` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnUrl {
    pub host: String,
    pub port: u16,
    pub transport: TurnTransport,
}

/// How a client reaches a TURN server (`?transport=`; UDP when absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnTransport {
    Udp,
    Tcp,
}

pub const DEFAULT_STUN_PORT: u16 = 3478;
const MAX_URL_BYTES: usize = 512;

impl StunUrl {
    pub fn parse(url: &str) -> Result<Self, Error> {
        let rest = strip_scheme(url, "stun:")?;
        let (host, port) = parse_authority(url, rest)?;
        Ok(Self { host, port })
    }

    /// `host:port` for name resolution.
    pub fn authority(&self) -> String {
        authority(&self.host, self.port)
    }
}

impl TurnUrl {
    pub fn parse(url: &str) -> Result<Self, Error> {
        let rest = strip_scheme(url, "turn:")?;
        let (rest, transport) = match rest.split_once('?') {
            None => (rest, TurnTransport::Udp),
            Some((rest, "transport=udp")) => (rest, TurnTransport::Udp),
            Some((rest, "transport=tcp")) => (rest, TurnTransport::Tcp),
            Some(_) => return Err(not_a_url(url, "the query may only be transport=udp|tcp")),
        };
        let (host, port) = parse_authority(url, rest)?;
        Ok(Self {
            host,
            port,
            transport,
        })
    }

    /// `host:port` for name resolution.
    pub fn authority(&self) -> String {
        authority(&self.host, self.port)
    }
}

fn not_a_url(url: &str, why: &str) -> Error {
    Error::bad_request(format!("{url:?} is not a valid ICE server URL: {why}"))
}

fn strip_scheme<'a>(url: &'a str, scheme: &str) -> Result<&'a str, Error> {
    if url.len() > MAX_URL_BYTES {
        return Err(not_a_url(url, "too long"));
    }
    url.strip_prefix(scheme)
        .ok_or_else(|| not_a_url(url, &format!("it must start with {scheme}")))
}

/// `host[:port]` or `[v6][:port]`.
fn parse_authority(url: &str, rest: &str) -> Result<(String, u16), Error> {
    let bad = |why: &str| not_a_url(url, why);
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
    Ok((host.to_string(), port))
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
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

    #[test]
    fn parses_turn_urls_with_transport() {
        let udp = TurnUrl::parse("turn:127.0.0.1:3479?transport=udp").unwrap();
        assert_eq!(
            (udp.host.as_str(), udp.port, udp.transport),
            ("127.0.0.1", 3479, TurnTransport::Udp)
        );
        let tcp = TurnUrl::parse("turn:[::1]?transport=tcp").unwrap();
        assert_eq!(
            (tcp.authority().as_str(), tcp.transport),
            ("[::1]:3478", TurnTransport::Tcp)
        );
        assert_eq!(
            TurnUrl::parse("turn:t.example").unwrap().transport,
            TurnTransport::Udp
        );
        for bad in ["stun:x", "turn:x?transport=sctp", "turn:x:0", "turns:x"] {
            assert!(TurnUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
