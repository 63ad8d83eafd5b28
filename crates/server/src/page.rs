//! The web chat page at `/`: one self-contained HTML file (inline CSS and JavaScript,
//! no external resources), so it works offline.

use axum::http::header;
use axum::response::IntoResponse;

/// The page's source, compiled into the binary.
pub const CHAT_PAGE: &str = include_str!("chat.html");

/// `GET /`.
pub(crate) async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CHAT_PAGE,
    )
}
