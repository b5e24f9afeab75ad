//! The registration token and CA pin, from `channel` (one format for both ends).

pub use channel::token::{CaPin, RegistrationToken, TokenError};
