//! How a render fails: the key, the kind of problem and the line, never a value.

use crate::api::Reason;

use super::Exceeded;

/// A template failed. Messages name the key, the kind of problem and the line, never a value.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template does not compile or does not render.
    #[error("{problem} in template for key {key:?}{}", at_line(*line))]
    Invalid {
        /// The Secret key whose template failed.
        key: String,
        /// What went wrong: MiniJinja's error kind (plus its detail for syntax errors).
        problem: String,
        /// Line in the template, when MiniJinja knows it.
        line: Option<usize>,
    },
    /// The rendered keys would not fit in a Secret.
    #[error("template for key {key:?}: the Secret would be over the 1 MiB limit")]
    TooLarge {
        /// The Secret key whose output crossed the limit.
        key: String,
    },
    /// The render crossed a bound of its budget.
    #[error("{} (template for key {key:?})", bound.text())]
    Budget {
        /// The Secret key being rendered when it did.
        key: String,
        /// Which bound.
        bound: Exceeded,
    },
    /// No render slot came free in time (other renders are running); retried soon.
    #[error("template for key {key:?}: the operator's renders are busy, retrying")]
    Busy {
        /// The first key of the template.
        key: String,
    },
}

impl TemplateError {
    /// Stable reason for status and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            Self::Invalid { .. } => Reason::InvalidSpec,
            Self::TooLarge { .. } => Reason::TooLarge,
            Self::Budget {
                bound: Exceeded::Time,
                ..
            } => Reason::TemplateTimeout,
            // The template asks for too much: only changing it helps.
            Self::Budget { .. } => Reason::InvalidSpec,
            Self::Busy { .. } => Reason::RenderBusy,
        }
    }

    /// The Secret key whose template failed.
    pub fn key(&self) -> &str {
        match self {
            Self::Invalid { key, .. }
            | Self::TooLarge { key }
            | Self::Budget { key, .. }
            | Self::Busy { key } => key,
        }
    }

    /// Whether a retry soon may succeed (a busy operator), rather than after a human's change.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }

    /// Whether rendering the same inputs again fails the same way (so the outcome may be
    /// cached); a missed deadline or a busy pool depend on the machine's load.
    pub fn is_repeatable(&self) -> bool {
        !matches!(
            self,
            Self::Busy { .. }
                | Self::Budget {
                    bound: Exceeded::Time,
                    ..
                }
        )
    }
}

fn at_line(line: Option<usize>) -> String {
    line.map(|n| format!(" at line {n}")).unwrap_or_default()
}
