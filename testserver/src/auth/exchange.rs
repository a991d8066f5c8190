//! placeholder: exchange routes (being written)

use axum::Router;

use super::MockAuth;

pub fn routes() -> Router<MockAuth> {
    Router::new()
}
