//! Keeper regions: the codes accepted as token prefixes and as config hostnames
//! (docs/dev/protocol.md#hosts-and-regions).

pub(crate) const DEFAULT_HOSTNAME: &str = "keepersecurity.com";

const REGIONS: [(&str, &str); 7] = [
    ("US", "keepersecurity.com"),
    ("EU", "keepersecurity.eu"),
    ("AU", "keepersecurity.com.au"),
    ("GOV", "govcloud.keepersecurity.us"),
    ("JP", "keepersecurity.jp"),
    ("CA", "keepersecurity.ca"),
    ("IL5", "il5.keepersecurity.us"),
];

/// The API hostname of a region code (case-insensitive), e.g. `eu` → `keepersecurity.eu`.
pub(crate) fn region_hostname(code: &str) -> Option<&'static str> {
    REGIONS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code))
        .map(|(_, host)| *host)
}

/// The API hostnames of every known region (the default allowed hosts).
pub(crate) fn region_hostnames() -> impl Iterator<Item = &'static str> {
    REGIONS.iter().map(|(_, host)| *host)
}
