//! ICE candidates between the SDK and its peers: reading the peer's
//! (browsers send `.local` mDNS names that str0m cannot use) and writing
//! ours (optionally hiding host addresses behind `.local` names, as
//! browsers do).
//!
//! A `.local` candidate is skipped, not resolved: the peer's connectivity
//! checks reach our candidates anyway, and str0m learns the peer's real
//! address from them as a peer-reflexive candidate. Server-reflexive and
//! relayed candidates, which browsers never hide, cover the rest.

use str0m::Candidate;

use crate::signaling::IceCandidate;

/// What to do with one candidate the peer sent.
#[derive(Debug)]
pub enum RemoteCandidate {
    Usable(Candidate),
    /// A `.local` name: the peer will be found through its checks.
    MdnsName(String),
    /// Not a UDP candidate we can parse: logged and skipped.
    Unusable(String),
}

pub fn parse_remote(candidate: &IceCandidate) -> RemoteCandidate {
    let line = candidate.candidate.trim();
    let line = line.strip_prefix("a=").unwrap_or(line);
    if let Some(name) = mdns_name(line) {
        return RemoteCandidate::MdnsName(name.to_string());
    }
    match Candidate::from_sdp_string(line) {
        Ok(c) if c.proto() == str0m::net::Protocol::Udp => RemoteCandidate::Usable(c),
        Ok(c) => RemoteCandidate::Unusable(format!("{} candidate", c.proto())),
        Err(e) => RemoteCandidate::Unusable(e.to_string()),
    }
}

/// The connection address of a `candidate:` line when it is a `.local`
/// name (field 5: foundation, component, transport, priority, address).
fn mdns_name(line: &str) -> Option<&str> {
    let address = line.split_ascii_whitespace().nth(4)?;
    address
        .to_ascii_lowercase()
        .ends_with(".local")
        .then_some(address)
}

/// The peer's SDP without `.local` candidate lines, which str0m's parser
/// would refuse (the whole description with them). Returns the cleaned SDP
/// and how many lines went.
pub fn strip_mdns_candidates(sdp: &str) -> (String, usize) {
    let mut skipped = 0;
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let is_mdns = line
            .trim_end()
            .strip_prefix("a=")
            .is_some_and(|attr| attr.starts_with("candidate:") && mdns_name(attr).is_some());
        if is_mdns {
            skipped += 1;
        } else {
            out.push_str(line);
        }
    }
    (out, skipped)
}

/// Our candidate as the peer gets it.
pub fn to_signal(
    candidate: &Candidate,
    mid: Option<&str>,
    hide_host: Option<&str>,
) -> IceCandidate {
    let line = candidate.to_sdp_string();
    let line = line.strip_prefix("a=").unwrap_or(&line).to_string();
    let line = match hide_host {
        Some(name) if candidate.kind() == str0m::CandidateKind::Host => {
            replace_address(&line, name)
        }
        _ => line,
    };
    IceCandidate {
        candidate: line,
        sdp_mid: mid.map(str::to_string),
        sdp_mline_index: Some(0),
    }
}

/// Our SDP with each host candidate's address replaced by `name`.
pub fn hide_host_addresses(sdp: &str, name: &str) -> String {
    sdp.split_inclusive('\n')
        .map(|line| match line.strip_prefix("a=candidate:") {
            Some(_) if line.contains(" typ host") => {
                let ending = &line[line.trim_end().len()..];
                format!("a={}{ending}", replace_address(&line.trim_end()[2..], name))
            }
            _ => line.to_string(),
        })
        .collect()
}

fn replace_address(line: &str, name: &str) -> String {
    line.split(' ')
        .enumerate()
        .map(|(i, field)| if i == 4 { name } else { field })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ice(line: &str) -> IceCandidate {
        IceCandidate {
            candidate: line.to_string(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        }
    }

    #[test]
    fn browser_candidates_are_sorted_out() {
        let host = "candidate:1 1 udp 2122260223 192.168.1.20 54400 typ host generation 0";
        assert!(matches!(
            parse_remote(&ice(host)),
            RemoteCandidate::Usable(_)
        ));
        let mdns = "candidate:2 1 udp 2122260223 8f1c5a2e-1b7e-4d8e-9a3c-4b0f1e2d3c4a.local 54401 typ host";
        assert!(
            matches!(parse_remote(&ice(mdns)), RemoteCandidate::MdnsName(n) if n.ends_with(".local"))
        );
        let tcp = "candidate:3 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active";
        assert!(matches!(
            parse_remote(&ice(tcp)),
            RemoteCandidate::Unusable(_)
        ));
        assert!(matches!(
            parse_remote(&ice("garbage")),
            RemoteCandidate::Unusable(_)
        ));
        assert!(matches!(
            parse_remote(&ice("")),
            RemoteCandidate::Unusable(_)
        ));
    }

    #[test]
    fn mdns_lines_leave_the_sdp_and_host_addresses_can_be_hidden() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2122260223 abc.local 5000 typ host\r\na=candidate:2 1 udp 2122260223 10.0.0.1 5000 typ host\r\na=candidate:3 1 udp 1686052607 1.2.3.4 6000 typ srflx raddr 10.0.0.1 rport 5000\r\n";
        let (clean, skipped) = strip_mdns_candidates(sdp);
        assert_eq!(skipped, 1);
        assert!(!clean.contains(".local") && clean.contains("10.0.0.1 5000"));
        let hidden = hide_host_addresses(&clean, "x.local");
        assert!(hidden.contains("a=candidate:2 1 udp 2122260223 x.local 5000 typ host\r\n"));
        assert!(hidden.contains("1.2.3.4 6000 typ srflx"));
        assert_eq!(strip_mdns_candidates(&hidden).1, 1);
    }
}
