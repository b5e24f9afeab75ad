//! The error type of every server function: safe to show, serialisable, and
//! mapped to an HTTP status by the server. Internal causes stay in the logs.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("Too many attempts. Try again in {0} seconds.")]
    Throttled(u64),
    #[error("The service is temporarily unavailable. Try again shortly.")]
    Unavailable,
    #[error("Something went wrong on our side. The details were logged.")]
    Internal,
    /// The change's audit event could not be written, so the change was
    /// rolled back with it.
    #[error("The action was not recorded, so it was not done.")]
    NotRecorded,
    /// The request itself was malformed (missing or unparsable fields), or the
    /// browser could not reach the server.
    #[error("{0}")]
    Request(String),
}

impl AppError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            AppError::Unauthenticated(_) => 401,
            AppError::Forbidden(_) => 403,
            AppError::NotFound(_) => 404,
            AppError::Conflict(_) => 409,
            AppError::Invalid(_) | AppError::Request(_) => 400,
            AppError::Throttled(_) => 429,
            AppError::Unavailable | AppError::NotRecorded => 503,
            AppError::Internal => 500,
        }
    }

    pub fn signed_out() -> Self {
        AppError::Unauthenticated("Please sign in.".into())
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(_) | ServerFnErrorErr::MissingArg(_) => AppError::Request(
                "The form was incomplete or malformed. Reload the page and try again.".into(),
            ),
            ServerFnErrorErr::Request(_) => {
                AppError::Request("Could not reach the server. Check your connection.".into())
            }
            _ => AppError::Internal,
        }
    }
}

#[cfg(feature = "ssr")]
impl From<control::ControlError> for AppError {
    fn from(e: control::ControlError) -> Self {
        use control::ControlError as C;
        match e {
            C::NotFound(m) => AppError::NotFound(m),
            C::Forbidden(m) => AppError::Forbidden(m),
            C::Unauthenticated(m) => AppError::Unauthenticated(m),
            C::Conflict(m) => AppError::Conflict(m),
            C::Invalid(m) => AppError::Invalid(m),
            C::Throttled(d) => AppError::Throttled(d.as_secs().max(1)),
            C::Unavailable(cause) => {
                tracing::error!(error = %cause, "database unavailable");
                AppError::Unavailable
            }
            C::NotRecorded(cause) => {
                tracing::error!(error = %cause, "a change was refused: it could not be recorded");
                AppError::NotRecorded
            }
            C::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                AppError::Internal
            }
        }
    }
}

#[cfg(feature = "ssr")]
impl From<tower_sessions::session::Error> for AppError {
    fn from(e: tower_sessions::session::Error) -> Self {
        tracing::error!(error = %e, "session store error");
        AppError::Internal
    }
}
