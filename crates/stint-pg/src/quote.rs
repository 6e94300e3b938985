//! Quoting identifiers and literals for the statements that cannot take bind parameters
//! (`CREATE ROLE`, `GRANT`, `ALTER ROLE`, `DROP ROLE`, ...).

use crate::PgError;

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1` in a default build); longer ones would be
/// truncated silently, so they are refused.
const MAX_IDENT_BYTES: usize = 63;

/// Quotes an identifier (a role name) for dynamic SQL: `"..."` with every `"` doubled.
///
/// Always quotes, so case, spaces and quotes survive exactly: `Admin` stays `Admin` rather than
/// folding to `admin`.
///
/// # Errors
///
/// [`PgError::Config`] if `name` is empty, contains a NUL byte or is longer than 63 bytes.
pub fn quote_ident(name: &str) -> Result<String, PgError> {
    if name.is_empty() {
        return Err(PgError::Config("a role name is empty".into()));
    }
    if name.contains('\0') {
        return Err(PgError::Config("a role name contains a NUL byte".into()));
    }
    if name.len() > MAX_IDENT_BYTES {
        return Err(PgError::Config(format!(
            "role name `{name}` is longer than {MAX_IDENT_BYTES} bytes"
        )));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Quotes a string literal for dynamic SQL: `'...'` with every `'` doubled.
///
/// A value containing a backslash is written as an escape string, `E'...'` with every `\` doubled as
/// well (what PostgreSQL's own `quote_literal` does), so the result means the same whatever the
/// server's `standard_conforming_strings`.
///
/// # Errors
///
/// [`PgError::Config`] if `s` contains a NUL byte (PostgreSQL text cannot hold one). The message does
/// not repeat `s`, which may be a secret.
pub fn quote_literal(s: &str) -> Result<String, PgError> {
    if s.contains('\0') {
        return Err(PgError::Config("a string literal contains a NUL byte".into()));
    }
    let quoted = s.replace('\'', "''");
    if s.contains('\\') {
        Ok(format!("E'{}'", quoted.replace('\\', "\\\\")))
    } else {
        Ok(format!("'{quoted}'"))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn quote_ident_doubles_quotes_and_keeps_case() {
        assert_eq!(quote_ident("stint_ab12").unwrap(), "\"stint_ab12\"");
        assert_eq!(quote_ident("Mixed Case").unwrap(), "\"Mixed Case\"");
        assert_eq!(quote_ident("a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(quote_ident("\"").unwrap(), "\"\"\"\"");
        assert_eq!(
            quote_ident("x'; DROP ROLE y; --").unwrap(),
            "\"x'; DROP ROLE y; --\""
        );
        assert_eq!(quote_ident(&"a".repeat(63)).unwrap().len(), 65);
    }

    #[test]
    fn quote_ident_refuses_empty_nul_and_long_names() {
        for bad in ["", "a\0b", &"a".repeat(64), &"é".repeat(32)] {
            assert!(matches!(quote_ident(bad), Err(PgError::Config(_))), "{bad:?}");
        }
    }

    #[test]
    fn quote_literal_doubles_quotes_and_escapes_backslashes() {
        assert_eq!(quote_literal("plain").unwrap(), "'plain'");
        assert_eq!(quote_literal("").unwrap(), "''");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal("a\\b'c").unwrap(), "E'a\\\\b''c'");
        assert_eq!(
            quote_literal("SCRAM-SHA-256$4096:a+/=").unwrap(),
            "'SCRAM-SHA-256$4096:a+/='"
        );
    }

    #[test]
    fn quote_literal_refuses_nul_without_echoing_the_value() {
        let err = quote_literal("secret\0value").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
