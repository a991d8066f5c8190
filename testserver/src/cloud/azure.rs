//! placeholder being written

use axum::Router;

use super::MockCloud;

pub fn routes() -> Router<MockCloud> {
    Router::new()
}
