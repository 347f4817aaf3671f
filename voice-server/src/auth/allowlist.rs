//! Who may sign in, and where login codes may be sent.
//!
//! Users: exact emails and `@domain` entries, compared after normalization
//! (trimmed, lower-cased). A domain entry matches only a verified email of
//! that domain and, when the provider names a hosted domain (Google
//! Workspace's `hd`), only if it is the same domain.
//!
//! Clients: a redirect target is accepted if its origin is exactly one of
//! the configured web origins, or it is a loopback URL
//! `http://127.0.0.1:<port>/...` or `http://[::1]:<port>/...` of a native
//! client (RFC 8252 section 7.3).

use std::collections::HashSet;
use std::net::IpAddr;

use url::{Host, Url};
use voice_core::Error;
use voice_core::model::Identity;

/// Issuers that mark Workspace accounts with `hd`; for these a domain entry
/// also requires `hd`, since a consumer account can carry any address.
const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// Consumer Google domains, which never carry `hd`.
const GOOGLE_CONSUMER_DOMAINS: [&str; 2] = ["gmail.com", "googlemail.com"];

fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    Some(email)
}

/// The users who may register and sign in.
#[derive(Clone, Debug, Default)]
pub struct UserAllowlist {
    emails: HashSet<String>,
    domains: HashSet<String>,
    open_registration: bool,
}

impl UserAllowlist {
    pub fn new(entries: &[String], open_registration: bool) -> Result<Self, String> {
        let mut list = Self {
            open_registration,
            ..Self::default()
        };
        for entry in entries {
            let entry = entry.trim().to_lowercase();
            if let Some(domain) = entry.strip_prefix('@') {
                if domain.is_empty() || domain.contains('@') {
                    return Err(format!("invalid allowlist entry {entry:?}"));
                }
                list.domains.insert(domain.to_string());
            } else {
                let email = normalize_email(&entry)
                    .ok_or_else(|| format!("invalid allowlist entry {entry:?}"))?;
                list.emails.insert(email);
            }
        }
        Ok(list)
    }

    /// Whether the allowlist lets nobody in.
    pub fn is_closed(&self) -> bool {
        !self.open_registration && self.emails.is_empty() && self.domains.is_empty()
    }

    /// Admits or refuses a verified identity, with a reason fit for the user.
    pub fn check(&self, identity: &Identity) -> Result<(), Error> {
        if self.open_registration {
            return Ok(());
        }
        let Some(email) = identity.email.as_deref().and_then(normalize_email) else {
            return Err(Error::forbidden(
                "the provider did not share an email address",
            ));
        };
        if !identity.email_verified {
            return Err(Error::forbidden("the email address is not verified"));
        }
        if self.emails.contains(&email) {
            return Ok(());
        }
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if self.domains.contains(domain) && self.hosted_domain_agrees(identity, domain) {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "{email} is not allowed to sign in here"
        )))
    }

    fn hosted_domain_agrees(&self, identity: &Identity, domain: &str) -> bool {
        match identity.hosted_domain.as_deref() {
            Some(hd) => hd.trim().eq_ignore_ascii_case(domain),
            None => {
                !GOOGLE_ISSUERS.contains(&identity.issuer.as_str())
                    || GOOGLE_CONSUMER_DOMAINS.contains(&domain)
            }
        }
    }
}

/// Where login codes may be delivered.
#[derive(Clone, Debug, Default)]
pub struct RedirectPolicy {
    web_origins: HashSet<String>,
}

impl RedirectPolicy {
    pub fn new(web_origins: impl IntoIterator<Item = String>) -> Self {
        Self {
            web_origins: web_origins
                .into_iter()
                .map(|origin| origin.trim_end_matches('/').to_string())
                .collect(),
        }
    }

    /// Whether `origin` (as a browser sends it in `Origin`) is one of ours.
    pub fn is_web_origin(&self, origin: &str) -> bool {
        self.web_origins.contains(origin)
    }

    /// Parses and admits a redirect target, or says why not.
    pub fn check(&self, target: &str) -> Result<Url, Error> {
        let refuse = |why: &str| Error::forbidden(format!("redirect_uri not allowed: {why}"));
        let url =
            Url::parse(target).map_err(|_| Error::bad_request("redirect_uri is not a URL"))?;
        if url.fragment().is_some() {
            return Err(refuse("it has a fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("it has credentials"));
        }
        let loopback = matches!(url.host(), Some(Host::Ipv4(ip)) if IpAddr::V4(ip).is_loopback() && ip.octets() == [127, 0, 0, 1])
            || matches!(url.host(), Some(Host::Ipv6(ip)) if ip.is_loopback());
        if url.scheme() == "http" && loopback && url.port().is_some() {
            return Ok(url);
        }
        if self
            .web_origins
            .contains(&url.origin().ascii_serialization())
        {
            return Ok(url);
        }
        Err(refuse("not a configured web origin nor a loopback address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(email: &str, verified: bool, hd: Option<&str>, issuer: &str) -> Identity {
        Identity {
            issuer: issuer.into(),
            subject: "sub".into(),
            email: Some(email.into()),
            email_verified: verified,
            name: None,
            picture: None,
            hosted_domain: hd.map(Into::into),
        }
    }

    #[test]
    fn exact_emails_match_after_normalization() {
        let list = UserAllowlist::new(&[" Alice@Example.COM ".into()], false).unwrap();
        assert!(
            list.check(&identity("alice@example.com", true, None, "https://idp"))
                .is_ok()
        );
        assert!(
            list.check(&identity("ALICE@example.com", true, None, "https://idp"))
                .is_ok()
        );
        assert!(
            list.check(&identity("bob@example.com", true, None, "https://idp"))
                .is_err()
        );
        assert!(
            list.check(&identity("alice@example.com", false, None, "https://idp"))
                .is_err()
        );
    }

    #[test]
    fn domains_need_a_verified_email_and_an_agreeing_hosted_domain() {
        let list =
            UserAllowlist::new(&["@corp.example".into(), "@gmail.com".into()], false).unwrap();
        let google = "https://accounts.google.com";
        assert!(
            list.check(&identity("a@corp.example", true, None, "https://idp"))
                .is_ok()
        );
        assert!(
            list.check(&identity("a@corp.example", false, None, "https://idp"))
                .is_err()
        );
        assert!(
            list.check(&identity("a@sub.corp.example", true, None, "https://idp"))
                .is_err()
        );
        assert!(
            list.check(&identity(
                "a@corp.example",
                true,
                Some("corp.example"),
                google
            ))
            .is_ok()
        );
        assert!(
            list.check(&identity("a@corp.example", true, None, google))
                .is_err()
        );
        assert!(
            list.check(&identity(
                "a@corp.example",
                true,
                Some("evil.example"),
                google
            ))
            .is_err()
        );
        assert!(
            list.check(&identity("a@gmail.com", true, None, google))
                .is_ok()
        );
    }

    #[test]
    fn empty_means_nobody_unless_registration_is_open() {
        let closed = UserAllowlist::new(&[], false).unwrap();
        assert!(closed.is_closed());
        assert!(
            closed
                .check(&identity("a@b.c", true, None, "https://idp"))
                .is_err()
        );
        let open = UserAllowlist::new(&[], true).unwrap();
        assert!(
            open.check(&identity("a@b.c", false, None, "https://idp"))
                .is_ok()
        );
        assert!(UserAllowlist::new(&["not-an-email".into()], false).is_err());
    }

    #[test]
    fn redirect_targets_are_configured_origins_or_loopback() {
        let policy = RedirectPolicy::new(["https://voice.example".to_string()]);
        assert!(policy.check("https://voice.example/after-login").is_ok());
        assert!(policy.check("http://127.0.0.1:49152/callback").is_ok());
        assert!(policy.check("http://[::1]:49152/callback").is_ok());
        for bad in [
            "https://voice.example.evil/after",
            "http://voice.example/after",
            "https://voice.example:8443/after",
            "http://localhost:49152/cb",
            "https://127.0.0.1:49152/cb",
            "http://127.0.0.2:49152/cb",
            "http://127.0.0.1/cb",
            "http://user@127.0.0.1:1/cb",
            "https://voice.example/after#frag",
        ] {
            assert!(policy.check(bad).is_err(), "{bad}");
        }
    }
}
