//! The strict notation parser (docs/dev/protocol.md#notation-syntax) and its inverse, `Display`.

use super::{FieldKind, Notation, NotationError, Selector};
use crate::ksm::crypto::b64_decode;
use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "keeper://";

fn syntax(message: impl Into<String>) -> NotationError {
    NotationError::Syntax(message.into())
}

/// Walks the notation text; positions are byte offsets on char boundaries.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Reads escaped text up to (not including) an unescaped `stop` or the end. Only `\/`,
    /// `\[`, `\]` and `\\` are valid escapes; an unescaped `[` is rejected when `no_open`.
    fn escaped_until(&mut self, stop: char, no_open: bool) -> Result<String, NotationError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if c == stop {
                break;
            }
            self.bump();
            match c {
                '\\' => match self.bump() {
                    Some(e @ ('/' | '[' | ']' | '\\')) => out.push(e),
                    Some(other) => return Err(syntax(format!("invalid escape \\{other}"))),
                    None => return Err(syntax("trailing escape character")),
                },
                '[' if no_open => return Err(syntax("unexpected [ inside an index")),
                c => out.push(c),
            }
        }
        Ok(out)
    }

    /// Reads raw text (selectors are not escaped) up to `stop` or the end.
    fn raw_until(&mut self, stop: char) -> &'a str {
        let start = self.pos;
        let len = self.text[start..]
            .find(stop)
            .unwrap_or(self.text.len() - start);
        self.pos = start + len;
        &self.text[start..self.pos]
    }

    /// Reads `[text]` if the next character is `[`.
    fn bracket(&mut self) -> Result<Option<String>, NotationError> {
        if self.peek() != Some('[') {
            return Ok(None);
        }
        self.bump();
        let text = self.escaped_until(']', true)?;
        if self.bump() != Some(']') {
            return Err(syntax("index is missing its closing ]"));
        }
        Ok(Some(text))
    }
}

/// A notation without `/` is base64url of the UTF-8 notation
/// (docs/dev/protocol.md#notation-syntax).
fn decode_base64_form(text: &str) -> Result<String, NotationError> {
    let bytes = b64_decode(text)
        .map_err(|_| syntax("expected a keeper:// notation or its URL-safe base64 form"))?;
    let decoded =
        String::from_utf8(bytes).map_err(|_| syntax("base64 notation is not UTF-8 text"))?;
    if !decoded.contains('/') {
        return Err(syntax("notation needs RECORD/SELECTOR"));
    }
    Ok(decoded)
}

fn parse_index(text: &str) -> Result<Option<usize>, NotationError> {
    if text.is_empty() {
        return Ok(None);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(
            "value index must be [], [N] or a property name such as [first]",
        ));
    }
    text.parse()
        .map(Some)
        .map_err(|_| syntax("value index is too large"))
}

fn parse_notation(input: &str) -> Result<Notation, NotationError> {
    if input.is_empty() {
        return Err(syntax("notation is empty"));
    }
    let decoded;
    let text = if input.contains('/') {
        input
    } else {
        decoded = decode_base64_form(input)?;
        decoded.as_str()
    };
    let has_prefix = text
        .get(..PREFIX.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(PREFIX));
    let mut cur = Cursor {
        text,
        pos: if has_prefix { PREFIX.len() } else { 0 },
    };

    let record = cur.escaped_until('/', false)?;
    if cur.bump() != Some('/') {
        return Err(syntax("notation needs RECORD/SELECTOR"));
    }
    let selector_name = cur.raw_until('/');
    let kind = match selector_name.to_ascii_lowercase().as_str() {
        simple @ ("type" | "title" | "notes") => {
            if !cur.at_end() {
                return Err(syntax(format!("selector {simple} takes no parameter")));
            }
            let selector = match simple {
                "type" => Selector::Type,
                "title" => Selector::Title,
                _ => Selector::Notes,
            };
            return Ok(Notation { record, selector });
        }
        "field" => Some(FieldKind::Standard),
        "custom_field" => Some(FieldKind::Custom),
        "file" => None,
        "" => return Err(syntax("selector is missing")),
        _ => {
            return Err(syntax(
                "unknown selector (expected type, title, notes, field, custom_field or file)",
            ));
        }
    };
    cur.bump(); // the '/' before the parameter, if any
    let name = cur.escaped_until('[', false)?;
    if name.is_empty() {
        return Err(syntax(format!(
            "selector {} needs a parameter",
            selector_name.to_ascii_lowercase()
        )));
    }
    let index = cur.bracket()?;
    let property = cur.bracket()?;
    if !cur.at_end() {
        return Err(syntax("unexpected characters after the last section"));
    }
    let Some(kind) = kind else {
        if index.is_some() {
            return Err(syntax("file selector takes no index"));
        }
        return Ok(Notation {
            record,
            selector: Selector::File(name),
        });
    };
    // `property` is only reachable after an index, so idx2 without idx1 cannot occur here.
    if property.as_deref() == Some("") {
        return Err(syntax("property index must not be empty"));
    }
    // A property as the only bracket (`name[first]`, as Keeper's documentation writes it) is,
    // as in the SDKs' getter, that property of the first value: `name[0][first]`. Property
    // names start with a letter, so `[-1]` and the like stay errors.
    let (index, property) = match (index, property) {
        (Some(text), None) if text.starts_with(|c: char| c.is_ascii_alphabetic()) => {
            (Some("0".to_string()), Some(text))
        }
        other => other,
    };
    let index = match index {
        Some(text) => parse_index(&text)?,
        None => None,
    };
    Ok(Notation {
        record,
        selector: Selector::Field {
            kind,
            name,
            index,
            property,
        },
    })
}

impl FromStr for Notation {
    type Err = NotationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_notation(s)
    }
}

/// Escapes text for a record, parameter or index section.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '/' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Notation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/", escape(&self.record))?;
        match &self.selector {
            Selector::Type => f.write_str("type"),
            Selector::Title => f.write_str("title"),
            Selector::Notes => f.write_str("notes"),
            Selector::File(name) => write!(f, "file/{}", escape(name)),
            Selector::Field {
                kind,
                name,
                index,
                property,
            } => {
                let kind = match kind {
                    FieldKind::Standard => "field",
                    FieldKind::Custom => "custom_field",
                };
                write!(f, "{kind}/{}", escape(name))?;
                match (index, property) {
                    (Some(i), _) => write!(f, "[{i}]")?,
                    (None, Some(_)) => f.write_str("[]")?,
                    (None, None) => {}
                }
                if let Some(p) = property {
                    write!(f, "[{}]", escape(p))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ksm::crypto::b64_url;
    use proptest::prelude::*;

    fn field(
        kind: FieldKind,
        name: &str,
        index: Option<usize>,
        property: Option<&str>,
    ) -> Selector {
        Selector::Field {
            kind,
            name: name.into(),
            index,
            property: property.map(Into::into),
        }
    }

    fn parse(text: &str) -> Result<Notation, NotationError> {
        text.parse()
    }

    #[test]
    fn escaping_example_from_the_python_sdk_tests() {
        let n = parse(r"title with \[\]\//custom_field/label with \[[0][middle]").unwrap();
        assert_eq!(n.record, "title with []/");
        assert_eq!(
            n.selector,
            field(FieldKind::Custom, "label with [", Some(0), Some("middle"))
        );
        let empty = parse(r"/custom_field/label with \[[0][middle]").unwrap();
        assert_eq!(empty.record, "");
    }

    #[test]
    fn selectors_prefix_and_indexes() {
        let n = parse("KEEPER://6ya_fdc6XTsZ7i7x9Jcodg/field/password").unwrap();
        assert_eq!(n.record, "6ya_fdc6XTsZ7i7x9Jcodg");
        assert_eq!(
            n.selector,
            field(FieldKind::Standard, "password", None, None)
        );
        assert_eq!(parse("r/Type").unwrap().selector, Selector::Type);
        assert_eq!(parse("r/title").unwrap().selector, Selector::Title);
        assert_eq!(parse("r/NOTES").unwrap().selector, Selector::Notes);
        assert_eq!(
            parse("r/field/name[]").unwrap().selector,
            field(FieldKind::Standard, "name", None, None)
        );
        assert_eq!(
            parse("r/field/name[][last]").unwrap().selector,
            field(FieldKind::Standard, "name", None, Some("last"))
        );
        assert_eq!(
            parse("r/custom_field/a/b[12]").unwrap().selector,
            field(FieldKind::Custom, "a/b", Some(12), None)
        );
        assert_eq!(
            parse("Web Certificate/file/cert.pem").unwrap().selector,
            Selector::File("cert.pem".into())
        );
    }

    #[test]
    fn a_property_as_the_only_bracket_means_that_property_of_the_first_value() {
        for (text, name, property) in [
            ("r/field/name[first]", "name", "first"),
            ("r/field/host[hostName]", "host", "hostName"),
            ("r/field/host[port]", "host", "port"),
            (r"r/field/x[a\]b]", "x", "a]b"),
        ] {
            assert_eq!(
                parse(text).unwrap().selector,
                field(FieldKind::Standard, name, Some(0), Some(property)),
                "{text}"
            );
        }
        assert_eq!(
            parse("r/custom_field/Phone[number]").unwrap().to_string(),
            "keeper://r/custom_field/Phone[0][number]",
            "written back in the long form"
        );
        // `[]` and `[N]` keep their meaning; a property after a property is still an error.
        assert_eq!(
            parse("r/field/name[]").unwrap().selector,
            field(FieldKind::Standard, "name", None, None)
        );
        assert!(parse("r/field/name[first][last]").is_err());
    }

    #[test]
    fn base64_form_is_decoded() {
        let encoded = b64_url("keeper://uid/field/login".as_bytes());
        let n = parse(&encoded).unwrap();
        assert_eq!(n.record, "uid");
        assert!(parse("not base64 at all!").is_err());
    }

    #[test]
    fn strict_errors() {
        for bad in [
            "",
            "record",
            "r/",
            "r/bogus",
            "r/type/x",
            "r/title[0]",
            "r/field",
            "r/field/",
            "r/field/x[0]trailing",
            "r/field/x[0][a][b]",
            "r/field/x[abc][def]",
            "r/field/x[-1]",
            "r/field/x[0",
            "r/field/x[[0]]",
            "r/field/x[0][]",
            "r/file/a.pem[0]",
            r"r\x/field/x",
            r"r/field/x\",
            r"r/field/x[0][a\q]",
            "r/field/x[99999999999999999999999]",
        ] {
            assert!(
                matches!(parse(bad), Err(NotationError::Syntax(_))),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            r"keeper://title with \[\]\//custom_field/label with \[[0][middle]",
            "keeper://r/field/name[][last]",
            "keeper://r/file/a\\/b",
            "keeper://r/notes",
        ] {
            let n = parse(text).unwrap();
            assert_eq!(n.to_string(), text);
            assert_eq!(parse(&n.to_string()).unwrap(), n);
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC*") {
            let _ = parse(&text);
        }

        #[test]
        fn parser_never_panics_on_notation_like_text(
            text in r"(keeper://)?[a-z\\/\[\]0-9 ]{0,12}/(field|custom_field|file|type|x)?[/a-z\\\[\]0-9]{0,12}"
        ) {
            if let Ok(n) = parse(&text) {
                prop_assert_eq!(parse(&n.to_string()).unwrap(), n);
            }
        }

        #[test]
        fn display_then_parse_is_identity(
            record in "\\PC{0,10}", name in "\\PC{1,10}", index in proptest::option::of(0usize..50),
            property in proptest::option::of("\\PC{1,6}"), custom in any::<bool>()
        ) {
            let n = Notation {
                record,
                selector: Selector::Field {
                    kind: if custom { FieldKind::Custom } else { FieldKind::Standard },
                    name, index, property,
                },
            };
            prop_assert_eq!(parse(&n.to_string()).unwrap(), n);
        }
    }
}
