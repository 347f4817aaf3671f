//! Turning SQLite failures into the shared [`voice_core::Error`]. Details go
//! to the log, never to the caller; constraint failures that a caller can
//! cause become `conflict` or `not_found`.

use rusqlite::ffi;
use voice_core::Error;

/// What a job running on a store thread can fail with: SQL errors (mapped
/// once, in [`DbError::into_error`]) or a decided API error. Both convert
/// with `?`, which keeps each query a short closure.
#[derive(Debug)]
pub(crate) enum DbError {
    Sql(rusqlite::Error),
    Api(Error),
}

pub(crate) type DbResult<T> = std::result::Result<T, DbError>;

impl From<rusqlite::Error> for DbError {
    fn from(error: rusqlite::Error) -> Self {
        DbError::Sql(error)
    }
}

impl From<Error> for DbError {
    fn from(error: Error) -> Self {
        DbError::Api(error)
    }
}

impl DbError {
    pub(crate) fn into_error(self) -> Error {
        match self {
            DbError::Api(error) => error,
            DbError::Sql(error) => sql_error(&error),
        }
    }
}

/// Maps a SQLite error for a caller, logging what the caller will not see.
pub(crate) fn sql_error(error: &rusqlite::Error) -> Error {
    if let Some(failure) = error.sqlite_error() {
        match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE => {
                tracing::debug!(%error, "store write conflicts with existing data");
                return Error::conflict("already exists");
            }
            // Foreign keys point at users, sessions and groups: the caller
            // named one that does not exist.
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                tracing::debug!(%error, "store write refers to a missing record");
                return Error::not_found("a referenced user, session or group does not exist");
            }
            _ => {}
        }
        if matches!(
            failure.code,
            ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked
        ) {
            tracing::error!(%error, "database is locked by another connection");
            return Error::unavailable("database is busy");
        }
    }
    tracing::error!(%error, "sqlite error");
    Error::internal()
}
