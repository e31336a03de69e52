//! PURE: renders `spec.target.template` with MiniJinja.
//!
//! Every mapped value is a variable named after its key and also sits in the `data` map
//! (for keys such as `tls.crt` that are not identifiers). Undefined variables are errors.
//! A KeeperSecret is hostile input: one [`budget::Budget`] covers the whole render (fuel, the
//! bytes helpers produce, the values parsers build, wall time, at most 64 templates), and the
//! output is capped at the Secret size limit. Errors carry the key, the kind and the line (or
//! the bound crossed), never a value.
//!
//! Templates come from `template.data` and from the ConfigMaps and Secrets that
//! `template.templateFrom` names ([`collect`] checks what the controller read). A template
//! read from a Secret is confidential: its errors never quote it.

mod budget;
mod error;
mod helpers;
mod parse;
mod source;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use minijinja::{Environment, Error, ErrorKind, Value};
use zeroize::Zeroizing;

use crate::api::{Template, TemplateMergePolicy};
use crate::sync::desired::{HashKey, MAX_SECRET_BYTES};
use crate::sync::mapping::Bytes;
pub use budget::Exceeded;
pub(crate) use budget::{Budget, DEADLINE, FUEL, MAX_TEMPLATE_KEYS};
pub use error::TemplateError;
pub(crate) use source::{FetchedSource, collect};
pub use source::{SourceError, SourceKind, TemplateSource};

/// Applies the template (if any) to the mapped values: the inline `data` templates, and those
/// `templateFrom` brought (`from`) for keys `data` does not set. `key` makes `htpasswd`'s salts.
/// The whole render runs on one [`Budget`] starting now; the result never exceeds the Secret
/// size limit: rendering stops as soon as the keys would.
pub fn apply(
    template: Option<&Template>,
    from: BTreeMap<String, TemplateSource>,
    values: BTreeMap<String, Bytes>,
    key: &HashKey,
) -> Result<BTreeMap<String, Bytes>, TemplateError> {
    apply_within(template, from, values, key, Budget::new(Instant::now()))
}

/// [`apply`] on a given budget.
pub(crate) fn apply_within(
    template: Option<&Template>,
    from: BTreeMap<String, TemplateSource>,
    values: BTreeMap<String, Bytes>,
    key: &HashKey,
    budget: Budget,
) -> Result<BTreeMap<String, Bytes>, TemplateError> {
    let Some(template) = template else {
        return Ok(values);
    };
    let mut sources = from;
    for (k, text) in &template.data {
        let text = Zeroizing::new(text.clone());
        let inline = TemplateSource {
            text,
            confidential: false,
        };
        sources.insert(k.clone(), inline);
    }
    if sources.is_empty() {
        return Ok(values);
    }
    if let Some(k) = sources.keys().nth(MAX_TEMPLATE_KEYS) {
        let key = k.clone();
        return Err(TemplateError::Budget {
            key,
            bound: Exceeded::Keys,
        });
    }
    let budget = Arc::new(budget);
    let mut env = helpers::environment(key.clone(), budget.clone());
    let ctx = context(&values);
    let mut out = match template.merge_policy {
        TemplateMergePolicy::Merge => values,
        TemplateMergePolicy::Replace => BTreeMap::new(),
    };
    // One fuel budget for all keys: each key starts with what the earlier ones left.
    let mut fuel = FUEL;
    for (key, source) in &sources {
        let over = |bound| TemplateError::Budget {
            key: key.clone(),
            bound,
        };
        if budget.time().is_err() {
            return Err(over(Exceeded::Time));
        }
        if fuel == 0 {
            return Err(over(Exceeded::Fuel));
        }
        env.set_fuel(Some(fuel));
        out.remove(key);
        let used: usize = out.iter().map(|(k, v)| k.len() + v.len()).sum();
        let room = MAX_SECRET_BYTES.saturating_sub(used + key.len());
        let (rendered, spent) = render(&env, key, source, &ctx, room, &budget)?;
        fuel = fuel.saturating_sub(spent);
        out.insert(key.clone(), rendered);
    }
    Ok(out)
}

/// Compiles, then renders into a buffer that refuses to grow past `room` bytes; returns the
/// output and the fuel spent.
fn render(
    env: &Environment<'_>,
    key: &str,
    source: &TemplateSource,
    ctx: &Value,
    room: usize,
    budget: &Budget,
) -> Result<(Bytes, u64), TemplateError> {
    // Compiling sees only the template text: its messages are shown when the tenant wrote it
    // in the open (spec or ConfigMap), but not when it came from a Secret.
    let template = env
        .template_from_named_str(key, &source.text)
        .map_err(|e| {
            let problem = if source.confidential {
                e.kind().to_string()
            } else {
                compile_problem(&e)
            };
            invalid(key, &e, problem)
        })?;
    let mut out = Limited {
        buf: Zeroizing::new(Vec::new()),
        room,
        over: false,
    };
    let rendered = template.render_captured_to(ctx.clone(), &mut out);
    match rendered {
        Ok(captured) => {
            let spent = captured.state().fuel_levels().map_or(0, |(used, _)| used);
            drop(captured);
            Ok((out.buf, spent))
        }
        Err(_) if out.over => Err(TemplateError::TooLarge { key: key.into() }),
        Err(e) => {
            let bound = budget
                .tripped()
                .or((e.kind() == ErrorKind::OutOfFuel).then_some(Exceeded::Fuel));
            match bound {
                Some(bound) => Err(TemplateError::Budget {
                    key: key.into(),
                    bound,
                }),
                // Rendering sees the values: MiniJinja's detail can quote them ("unable to
                // calculate 73195 // 0"), so only the kind is shown.
                None => Err(invalid(key, &e, render_problem(&e))),
            }
        }
    }
}

fn invalid(key: &str, e: &Error, problem: String) -> TemplateError {
    TemplateError::Invalid {
        key: key.into(),
        problem,
        line: e.line(),
    }
}

fn compile_problem(e: &Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// The kind (a fixed text per kind), plus the detail only when it is one of the operator's own
/// fixed texts.
fn render_problem(e: &Error) -> String {
    match e.detail() {
        Some(detail) if helpers::OWN_ERRORS.contains(&detail) => detail.to_string(),
        _ => e.kind().to_string(),
    }
}

/// Output sink with a byte budget; writing past it fails the render.
struct Limited {
    buf: Bytes,
    room: usize,
    over: bool,
}

impl io::Write for Limited {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.room {
            self.over = true;
            return Err(io::Error::other("over the Secret size limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Values are strings when they are UTF-8 and bytes otherwise (binary files).
fn context(values: &BTreeMap<String, Bytes>) -> Value {
    let data: BTreeMap<String, Value> = values
        .iter()
        .map(|(k, v)| {
            let value = match std::str::from_utf8(v) {
                Ok(s) => Value::from(s),
                Err(_) => Value::from_bytes(v.to_vec()),
            };
            (k.clone(), value)
        })
        .collect();
    let mut vars = data.clone();
    vars.insert("data".to_string(), Value::from(data));
    Value::from(vars)
}

#[cfg(test)]
mod tests;
