//! PURE: `fromjson` and `fromyaml` that charge every value they build to the render's budget.
//!
//! serde_yaml_ng bounds alias *jumps*, not the values an alias copies: a 25 KB document with an
//! anchored list of 5,000 items referenced 5,000 times builds 25 million values (600+ MiB).
//! Building MiniJinja values ourselves, one [`Budget::node`] each, stops that at
//! [`MAX_PARSE_NODES`] whatever the text, and bounds nesting at [`MAX_PARSE_DEPTH`].

use std::collections::BTreeMap;
use std::fmt;

use minijinja::{Error, Value};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::budget::{Budget, Exceeded, MAX_PARSE_DEPTH};

/// `fromjson` and `fromyaml` parse at most this many bytes of text.
pub const MAX_PARSE_BYTES: usize = 256 * 1024;

/// What went wrong, for the caller's fixed texts: the budget (already recorded in it) or the
/// text itself.
pub enum ParseError {
    /// A bound of the render's budget; the budget holds which.
    Budget(Error),
    /// Not valid JSON / YAML (the parser's message may quote the text: not kept).
    Syntax,
}

/// Parses JSON text into a value, charging `budget`.
pub fn json(text: &str, budget: &Budget) -> Result<Value, ParseError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = finish(Seed::new(budget).deserialize(&mut de), budget)?;
    de.end().map_err(|_| ParseError::Syntax)?;
    Ok(value)
}

/// Parses one YAML document into a value, charging `budget` (aliases included).
pub fn yaml(text: &str, budget: &Budget) -> Result<Value, ParseError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    finish(Seed::new(budget).deserialize(de), budget)
}

fn finish<E>(result: Result<Value, E>, budget: &Budget) -> Result<Value, ParseError> {
    result.map_err(|_| match budget.tripped() {
        Some(bound)
            if matches!(
                bound,
                Exceeded::Nodes | Exceeded::Depth | Exceeded::Bytes | Exceeded::Time
            ) =>
        {
            ParseError::Budget(budget.trip(bound))
        }
        _ => ParseError::Syntax,
    })
}

/// Builds one value at `depth`.
#[derive(Clone, Copy)]
struct Seed<'b> {
    budget: &'b Budget,
    depth: usize,
}

impl<'b> Seed<'b> {
    fn new(budget: &'b Budget) -> Self {
        Seed { budget, depth: 0 }
    }

    /// Charges one value of `text` bytes (and checks the deadline).
    fn charge<E: de::Error>(&self, text: usize) -> Result<(), E> {
        self.budget.node(text).map_err(|e| E::custom(e.kind()))
    }

    /// The seed for the items of a list or map, one level deeper.
    fn child<E: de::Error>(self) -> Result<Seed<'b>, E> {
        if self.depth >= MAX_PARSE_DEPTH {
            let e = self.budget.trip(Exceeded::Depth);
            return Err(E::custom(e.kind()));
        }
        Ok(Seed {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::from(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(()))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let child = self.child()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Value::from(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let child = self.child()?;
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key_seed(child)? {
            let value = map.next_value_seed(child)?;
            entries.insert(key, value);
        }
        Ok(Value::from_object(entries))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::sync::template::budget::MAX_PARSE_NODES;

    fn budget() -> Budget {
        Budget::new(Instant::now())
    }

    /// `{a: &a [x, x, ...n], b: [*a, *a, ...m]}`: n·m values from about 3·(n+m) bytes.
    fn alias_bomb(n: usize, m: usize) -> String {
        format!(
            "{{a: &a [{}], b: [{}]}}",
            vec!["x"; n].join(","),
            vec!["*a"; m].join(",")
        )
    }

    #[test]
    fn values_match_serde() {
        let b = budget();
        let text = r#"{"db": {"host": "h", "port": 5432}, "tags": ["a", null, true, 1.5]}"#;
        let ours = json(text, &b).ok().unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
        let text = "a: [1, 2]\nb: {c: x}\n3: ~\n";
        let ours = yaml(text, &b).ok().unwrap();
        let theirs: Value = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn an_alias_bomb_stops_at_the_node_budget() {
        let text = alias_bomb(5000, 5000);
        assert!(text.len() < 30_000, "{}", text.len());
        let b = budget();
        let start = Instant::now();
        assert!(matches!(yaml(&text, &b), Err(ParseError::Budget(_))));
        assert_eq!(b.tripped(), Some(Exceeded::Nodes));
        assert!(start.elapsed().as_secs() < 2, "{:?}", start.elapsed());
        // Aliases within the budget still work: they are YAML.
        let b = budget();
        let small = yaml(&alias_bomb(3, 2), &b).ok().unwrap();
        assert_eq!(small.get_attr("b").unwrap().len(), Some(2));
    }

    #[test]
    fn the_node_budget_is_shared_by_every_call() {
        let b = budget();
        let list = format!("[{}]", vec!["1"; MAX_PARSE_NODES / 2].join(","));
        assert!(json(&list, &b).is_ok());
        assert!(matches!(json(&list, &b), Err(ParseError::Budget(_))));
        assert_eq!(b.tripped(), Some(Exceeded::Nodes));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(json(&deep(MAX_PARSE_DEPTH), &budget()).is_ok());
        let b = budget();
        assert!(matches!(
            json(&deep(MAX_PARSE_DEPTH + 1), &b),
            Err(ParseError::Budget(_))
        ));
        assert_eq!(b.tripped(), Some(Exceeded::Depth));
        let b = budget();
        let deep_yaml = format!("{}x{}", "[".repeat(100), "]".repeat(100));
        assert!(yaml(&deep_yaml, &b).is_err());
    }

    #[test]
    fn syntax_errors_do_not_trip_the_budget() {
        let b = budget();
        assert!(matches!(json("{", &b), Err(ParseError::Syntax)));
        assert!(matches!(json("1 2", &b), Err(ParseError::Syntax)));
        assert!(matches!(yaml("a: [", &b), Err(ParseError::Syntax)));
        assert_eq!(b.tripped(), None);
    }
}
