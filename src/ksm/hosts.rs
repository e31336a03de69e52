//! The Keeper API hosts a client may talk to. Credentials name their host and come from
//! tenants, so without a list a tenant could aim the operator at any address it can reach
//! (internal services, cloud metadata endpoints). The check runs on the parsed request URL,
//! before anything is sent.

use crate::ksm::error::KsmError;
use crate::ksm::region::region_hostnames;
use reqwest::Url;

/// One entry: a host (any port) or `host:port` (that port only). Hosts are lowercase, without
/// a trailing dot; IP literals as the URL parser writes them (`127.0.0.1`, `[::1]`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    host: String,
    port: Option<u16>,
}

/// The allow-list. Parse it once at startup; [`AllowedHosts::check`] is cheap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid allowed host {entry:?}: {why}")]
pub struct HostEntryError {
    entry: String,
    why: &'static str,
}

/// A host as the URL parser normalises it (lowercase, IDNA, IP literals), without a trailing dot.
fn normalize_host(host: &str) -> Option<String> {
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || "/?#@\\".contains(c))
    {
        return None;
    }
    let url = Url::parse(&format!("https://{host}/")).ok()?;
    if url.port().is_some() {
        return None;
    }
    let host = url.host_str()?.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_string())
}

impl Entry {
    fn parse(text: &str) -> Result<Entry, &'static str> {
        // `host:port`, but a bracketed IPv6 literal ends in `]` and a bare one has many colons.
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !text.ends_with(']') => {
                if host.contains(':') && !host.starts_with('[') {
                    return Err("IPv6 addresses need brackets, e.g. [::1]:8443");
                }
                let port = port.parse().map_err(|_| "the port is not a number")?;
                (host, Some(port))
            }
            _ => (text, None),
        };
        let host = normalize_host(host).ok_or("not a hostname or IP address")?;
        Ok(Entry { host, port })
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        self.host == host && self.port.is_none_or(|p| Some(p) == port)
    }
}

impl AllowedHosts {
    /// Keeper's published regions (every hostname of the region table), any port.
    pub fn keeper_regions() -> AllowedHosts {
        AllowedHosts {
            entries: region_hostnames()
                .map(|host| Entry {
                    host: host.to_string(),
                    port: None,
                })
                .collect(),
        }
    }

    /// Parses entries (`host` or `host:port`); blank entries are ignored, but the list must name
    /// at least one host.
    pub fn parse<S: AsRef<str>>(
        entries: impl IntoIterator<Item = S>,
    ) -> Result<AllowedHosts, HostEntryError> {
        let mut parsed = Vec::new();
        for entry in entries {
            let text = entry.as_ref().trim();
            if text.is_empty() {
                continue;
            }
            parsed.push(Entry::parse(text).map_err(|why| HostEntryError {
                entry: text.to_string(),
                why,
            })?);
        }
        if parsed.is_empty() {
            return Err(HostEntryError {
                entry: String::new(),
                why: "the list names no host",
            });
        }
        Ok(AllowedHosts { entries: parsed })
    }

    /// Fails with `HostNotAllowed` (naming the host; a hostname is not a secret) unless `url`'s
    /// host, and port where the entry names one, is on the list.
    pub fn check(&self, url: &Url) -> Result<(), KsmError> {
        let host = url.host_str().unwrap_or_default().trim_end_matches('.');
        let port = url.port_or_known_default();
        if !host.is_empty() && self.entries.iter().any(|e| e.matches(host, port)) {
            return Ok(());
        }
        Err(KsmError::HostNotAllowed {
            host: match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str) -> Url {
        Url::parse(&format!("https://{host}/api/rest/sm/v1/get_secret")).unwrap()
    }

    fn allowed(list: &AllowedHosts, host: &str) -> bool {
        list.check(&url(host)).is_ok()
    }

    #[test]
    fn the_default_is_keepers_regions_on_any_port() {
        let list = AllowedHosts::keeper_regions();
        for host in [
            "keepersecurity.com",
            "keepersecurity.eu",
            "keepersecurity.com.au",
            "govcloud.keepersecurity.us",
            "keepersecurity.jp",
            "keepersecurity.ca",
            "KeeperSecurity.COM",
            "keepersecurity.com.",
            "keepersecurity.com:8443",
        ] {
            assert!(allowed(&list, host), "{host}");
        }
        for host in [
            "127.0.0.1",
            "169.254.169.254",
            "evil.keepersecurity.com",
            "keepersecurity.com.evil.example",
            "kubernetes.default.svc",
        ] {
            assert!(!allowed(&list, host), "{host}");
        }
    }

    #[test]
    fn a_port_in_an_entry_must_match_exactly() {
        let list = AllowedHosts::parse(["127.0.0.1:8443", "ksm.internal", "[::1]:9443"]).unwrap();
        assert!(allowed(&list, "127.0.0.1:8443"));
        assert!(!allowed(&list, "127.0.0.1:8444"));
        assert!(!allowed(&list, "127.0.0.1"));
        assert!(allowed(&list, "KSM.internal:1234"));
        assert!(allowed(&list, "ksm.internal"));
        assert!(allowed(&list, "[::1]:9443"));
        assert!(!allowed(&list, "[::1]"));
        // Port 443 written out is still port 443.
        let list = AllowedHosts::parse(["ksm.internal:443"]).unwrap();
        assert!(allowed(&list, "ksm.internal"));
        assert!(!allowed(&list, "ksm.internal:444"));
    }

    #[test]
    fn the_error_names_the_host_the_request_would_really_reach() {
        let list = AllowedHosts::keeper_regions();
        // Userinfo makes the text before `@` look like the host; the URL parser knows better.
        let err = list
            .check(&url("keepersecurity.com@evil.example:8443"))
            .unwrap_err();
        assert_eq!(err.reason(), "HostNotAllowed");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("evil.example:8443"), "{err}");
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in ["http://x", "a/b", "host:port", "::1", "a b", "user@host"] {
            assert!(AllowedHosts::parse([bad]).is_err(), "{bad}");
        }
        assert!(AllowedHosts::parse(["", " "]).is_err());
        assert_eq!(
            AllowedHosts::parse([" keepersecurity.com ", ""]).unwrap(),
            AllowedHosts::parse(["keepersecurity.com"]).unwrap()
        );
    }
}
