//! Sign-in: the OIDC relying party, dev sign-in, and the server's own
//! access and refresh tokens.

pub mod allowlist;
pub mod extract;
pub mod flows;
pub mod oidc;
pub mod routes;
pub mod tokens;

pub use extract::AuthUser;
pub use routes::router;
