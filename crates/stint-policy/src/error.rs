//! Why a policy source was refused, with positions in the submitted text.

use miette::Diagnostic;

/// One reason a policy source was refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyError {
    /// 1-based line in the submitted source; 0 when the error has no position there (a generated policy
    /// or the schema).
    pub line: u32,
    /// 1-based column (in characters) in the submitted source; 0 with `line` 0.
    pub column: u32,
    /// What is wrong, with Cedar's hint when it has one.
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}

impl PolicyError {
    /// An error at byte `offset` of `src`.
    pub(crate) fn at(src: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_column(src, offset);
        Self {
            line,
            column,
            message: message.into(),
        }
    }

    /// An error with no position in the user source.
    pub(crate) fn unplaced(message: impl Into<String>) -> Self {
        Self {
            line: 0,
            column: 0,
            message: message.into(),
        }
    }

    /// A Cedar diagnostic whose first label spans `src` (Cedar's source spans are byte offsets into the
    /// text that was parsed).
    pub(crate) fn from_diagnostic(src: &str, d: &dyn Diagnostic) -> Self {
        let mut message = d.to_string();
        if let Some(help) = d.help() {
            message.push_str(&format!(" ({help})"));
        }
        match d.labels().and_then(|mut l| l.next()) {
            Some(label) => Self::at(src, label.offset(), message),
            None => Self::unplaced(message),
        }
    }
}

/// 1-based line and character column of byte `offset` in `src` (clamped to the text).
fn line_column(src: &str, offset: usize) -> (u32, u32) {
    let mut end = offset.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = src.get(..end).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (saturate(line), saturate(column))
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Sorts by position and drops repeats. Cedar reports an error in the shared context once per action
/// ("… in context for Action::\"request\" …", then for `approve`, …); every action sees the same context
/// here, so those collapse into one message without the action.
pub(crate) fn tidy(mut errors: Vec<PolicyError>) -> Vec<PolicyError> {
    for e in &mut errors {
        e.message = without_action(&e.message);
    }
    errors.sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
    errors.dedup();
    errors
}

fn without_action(msg: &str) -> String {
    const NEEDLE: &str = " for Action::\"";
    if let Some(start) = msg.find(NEEDLE) {
        let rest = &msg[start + NEEDLE.len()..];
        if let Some(close) = rest.find('"') {
            return format!("{}{}", &msg[..start], &rest[close + 1..]);
        }
    }
    msg.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based_and_count_characters() {
        let src = "ab\n\n  ü x";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 2), (1, 3));
        assert_eq!(line_column(src, 3), (2, 1));
        assert_eq!(line_column(src, 4), (3, 1));
        // `x` is after a two-byte `ü`: byte 9, character column 5.
        assert_eq!(line_column(src, 9), (3, 5));
        // Inside `ü`, and past the end: clamped.
        assert_eq!(line_column(src, 7), (3, 3));
        assert_eq!(line_column(src, 99), (3, 6));
    }

    #[test]
    fn per_action_repeats_collapse() {
        let e = |m: &str| PolicyError {
            line: 2,
            column: 3,
            message: m.into(),
        };
        let out = tidy(vec![
            e("attribute `x` in context for Action::\"request\" not found"),
            e("attribute `x` in context for Action::\"admin\" not found"),
        ]);
        assert_eq!(out, vec![e("attribute `x` in context not found")]);
    }
}
