//! Who is asking, and what they may do in a room.
//!
//! Every request carries an [`Identity`]: a guest, or a signed-in user (by session cookie,
//! bearer token or Basic credentials). What an identity may do in a room is an [`Access`].

use crate::domain::Author;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Identity {
    /// Not signed in.
    #[default]
    Guest,
    /// A signed-in user: the name they post under, and whether they administer the server.
    User { name: Author, admin: bool },
}

impl Identity {
    /// The signed-in user's name.
    pub fn user(&self) -> Option<&Author> {
        match self {
            Identity::Guest => None,
            Identity::User { name, .. } => Some(name),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Identity::User { admin: true, .. })
    }
}

/// What a signed-in request proved, for checking later that it still holds (an open stream
/// of a user deleted, or whose password changed, ends: [`crate::accounts::credential_holds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub user: Author,
    /// The user's epoch when they signed in.
    pub epoch: u64,
}

/// What an identity may do in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    /// Delete anyone's messages, and be exempt from slow mode.
    pub moderate: bool,
}

impl Access {
    /// Read and write, nothing more: an open room.
    pub const OPEN: Access = Access { read: true, write: true, moderate: false };
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Identity {
    type Rejection = std::convert::Infallible;

    /// The identity the sign-in layer put on the request; a guest when there is none.
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Identity>().cloned().unwrap_or_default())
    }
}
