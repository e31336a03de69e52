//! `--watch-label-selector`: a Kubernetes label selector, checked when the flag is parsed so a
//! typo stops the operator at startup with the faulty term named, instead of as a watch the API
//! server refuses over and over.
//!
//! The selector is kept parsed: its canonical form (terms sorted, one spelling per operator)
//! names the shard's Lease, so two spellings of one selector elect on the same Lease.

use std::collections::BTreeSet;
use std::fmt;

/// A label selector; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(BTreeSet<Requirement>);

/// One comma-separated term of a selector.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Requirement {
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Exists,
    NotExists,
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
}

impl LabelSelector {
    /// Parses the API server's selector syntax: `key`, `!key`, `key=value` (or `==`),
    /// `key!=value`, `key in (a,b)`, `key notin (a,b)`, joined by commas.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        if text.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        split_terms(text)?
            .into_iter()
            .map(|term| Requirement::parse(term).map_err(|e| format!("{term:?}: {e}")))
            .collect::<Result<_, _>>()
            .map(LabelSelector)
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The requirements on `key` only.
    pub fn on_key(&self, key: &str) -> LabelSelector {
        LabelSelector(self.0.iter().filter(|r| r.key == key).cloned().collect())
    }
}

/// The canonical form, which the API server accepts.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let key = &r.key;
            let set = |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>();
            match &r.op {
                Op::Exists => write!(f, "{key}")?,
                Op::NotExists => write!(f, "!{key}")?,
                Op::Equals(v) => write!(f, "{key}={v}")?,
                Op::NotEquals(v) => write!(f, "{key}!={v}")?,
                Op::In(vs) => write!(f, "{key} in ({})", set(vs).join(","))?,
                Op::NotIn(vs) => write!(f, "{key} notin ({})", set(vs).join(","))?,
            }
        }
        Ok(())
    }
}

/// Splits at the commas outside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("nested parentheses".into()),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("unbalanced ')'".into()),
            ',' if depth == 0 => {
                terms.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unclosed '('".into());
    }
    terms.push(text[start..].trim());
    if terms.iter().any(|t| t.is_empty()) {
        return Err("empty term (stray comma)".into());
    }
    Ok(terms)
}

impl Requirement {
    fn parse(term: &str) -> Result<Requirement, String> {
        let (key, op) = if let Some(key) = term.strip_prefix('!') {
            (key, Op::NotExists)
        } else if let Some((key, values)) = term.split_once('(') {
            let values = values.strip_suffix(')').ok_or("text after ')'")?;
            let values: BTreeSet<String> = values
                .split(',')
                .map(|v| value(v.trim()))
                .collect::<Result<_, _>>()?;
            match key.trim_end().rsplit_once(char::is_whitespace) {
                Some((key, "in")) => (key, Op::In(values)),
                Some((key, "notin")) => (key, Op::NotIn(values)),
                _ => return Err("a set needs `KEY in (...)` or `KEY notin (...)`".into()),
            }
        } else if let Some((key, v)) = term.split_once("!=") {
            (key, Op::NotEquals(value(v.trim())?))
        } else if let Some((key, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (key, Op::Equals(value(v.trim())?))
        } else if term.contains(['<', '>']) {
            return Err("`<` and `>` are not label selector operators here".into());
        } else {
            (term, Op::Exists)
        };
        Ok(Requirement {
            key: key_name(key.trim())?,
            op,
        })
    }
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name.
fn key_name(key: &str) -> Result<String, String> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    if key.contains('/') {
        let subdomain = prefix.len() <= 253
            && prefix.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !subdomain {
            return Err(format!("key prefix {prefix:?} is not a DNS subdomain"));
        }
    }
    if name.is_empty() || !is_name(name) {
        return Err(format!(
            "key {key:?} is not a label key (at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit)"
        ));
    }
    Ok(key.to_string())
}

fn value(v: &str) -> Result<String, String> {
    if v.is_empty() || is_name(v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "value {v:?} is not a label value (at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit)"
        ))
    }
}

/// The shape of a label name and of a non-empty label value.
fn is_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    s.len() <= 63
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        LabelSelector::parse(text).unwrap().to_string()
    }

    #[test]
    fn every_operator_parses_to_one_canonical_spelling() {
        assert_eq!(canonical(""), "");
        assert!(LabelSelector::parse("  ").unwrap().is_empty());
        assert_eq!(
            canonical("sharding.keeper-operator.dev/key"),
            "sharding.keeper-operator.dev/key"
        );
        assert_eq!(
            canonical("!sharding.keeper-operator.dev/key"),
            "!sharding.keeper-operator.dev/key"
        );
        assert_eq!(canonical("k == a"), "k=a");
        assert_eq!(canonical("k=a"), "k=a");
        assert_eq!(canonical("k="), "k=", "an empty value is a value");
        assert_eq!(canonical("k != a"), "k!=a");
        assert_eq!(canonical("k in ( b, a )"), "k in (a,b)");
        assert_eq!(canonical("k notin (a)"), "k notin (a)");
        assert_eq!(
            canonical("tier=web, k in (a,b), !x"),
            canonical("!x,k in (b,a),tier==web"),
            "order and spelling do not matter"
        );
    }

    #[test]
    fn a_bad_selector_names_what_is_wrong() {
        for (text, expected) in [
            ("k=a,", "stray comma"),
            ("k in (a", "unclosed"),
            ("k in a)", "unbalanced"),
            ("k in (a) x", "text after"),
            ("k within (a)", "in (...)"),
            ("k>1", "not label selector operators"),
            ("bad key=a", "not a label key"),
            ("Upper.Case/k=a", "not a DNS subdomain"),
            ("k=-a", "not a label value"),
            (&format!("k={}", "v".repeat(64)), "not a label value"),
        ] {
            let err = LabelSelector::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn on_key_keeps_only_that_keys_terms() {
        let s = LabelSelector::parse("team=a,!shard,shard in (x)").unwrap();
        assert_eq!(s.on_key("shard").to_string(), "!shard,shard in (x)");
        assert!(s.on_key("other").is_empty());
    }
}
