//! The one error type of this crate and the mapping from sqlx errors.

use std::fmt;

/// Why an operation on a PostgreSQL target failed.
///
/// No message contains a password or the admin URL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The configuration or an argument is invalid (a bad admin URL, an identifier that cannot be
    /// quoted, a zero timeout); retrying does not help.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server could not be reached or did not answer in time (connection refused or dropped, I/O
    /// error, TLS failure, pool or statement timeout, server shutting down); retry with backoff.
    #[error("postgresql unreachable: {0}")]
    Unreachable(String),
    /// The named role does not exist.
    #[error("role `{0}` does not exist")]
    NoSuchRole(String),
    /// The server refused a statement, or answered something unexpected.
    #[error("postgresql error{}: {message}", SqlState(code.as_deref()))]
    Sql {
        /// The SQLSTATE, when the server sent one (e.g. `42501` for insufficient privilege).
        code: Option<String>,
        /// The server's message and detail.
        message: String,
    },
    /// A revocation ran but its effect could not be confirmed (the role still exists, or some of its
    /// backends are still running).
    #[error("revocation not confirmed: {0}")]
    NotConfirmed(String),
}

impl PgError {
    /// Whether the same call may succeed later: the server was unreachable or timed out, or a
    /// transaction lost a serialization or deadlock race, or a lock was not available.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Unreachable(_) => true,
            PgError::Sql { code: Some(code), .. } => code.starts_with("40") || code == "55P03",
            _ => false,
        }
    }

    /// The SQLSTATE of a [`PgError::Sql`].
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            PgError::Sql { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Formats an optional SQLSTATE as ` <code>`.
struct SqlState<'a>(Option<&'a str>);

impl fmt::Display for SqlState<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(code) => write!(f, " {code}"),
            None => Ok(()),
        }
    }
}

/// SQLSTATEs that mean the connection is gone or the server cannot serve now.
fn unreachable_state(code: &str) -> bool {
    code.starts_with("08") // connection_exception
        || matches!(
            code,
            "57P01" // admin_shutdown
            | "57P02" // crash_shutdown
            | "57P03" // cannot_connect_now
            | "57014" // query_canceled: our statement_timeout
            | "53300" // too_many_connections
        )
}

impl From<sqlx::Error> for PgError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Configuration(e) => PgError::Config(e.to_string()),
            sqlx::Error::InvalidArgument(e) => PgError::Config(e),
            sqlx::Error::Database(e) => {
                let code = e.code().map(|c| c.into_owned());
                let mut message = e.message().to_owned();
                if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    && let Some(detail) = pg.detail()
                {
                    message.push_str(": ");
                    message.push_str(detail);
                }
                match code {
                    Some(code) if unreachable_state(&code) => {
                        PgError::Unreachable(format!("{message} (sqlstate {code})"))
                    }
                    code => PgError::Sql { code, message },
                }
            }
            e @ (sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed) => PgError::Unreachable(e.to_string()),
            other => PgError::Sql {
                code: None,
                message: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_pool_errors_are_unreachable_and_retryable() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        for err in [refused, sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            let err = PgError::from(err);
            assert!(matches!(err, PgError::Unreachable(_)), "{err:?}");
            assert!(err.is_retryable());
        }
    }

    #[test]
    fn sql_error_display_names_the_sqlstate() {
        let err = PgError::Sql {
            code: Some("42501".into()),
            message: "permission denied".into(),
        };
        assert_eq!(err.to_string(), "postgresql error 42501: permission denied");
        assert!(!err.is_retryable());
        let err = PgError::Sql {
            code: None,
            message: "odd".into(),
        };
        assert_eq!(err.to_string(), "postgresql error: odd");
        let err = PgError::Sql {
            code: Some("40001".into()),
            message: "serialization".into(),
        };
        assert!(err.is_retryable());
    }
}
