//! (in progress)
use std::sync::Arc;

pub fn routes() -> axum::Router<Arc<super::Sim>> {
    axum::Router::new()
}
