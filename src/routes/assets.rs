//! `GET /assets/{file}`: the stylesheet and script, embedded in the binary so it runs from
//! any directory, served with an `ETag` so browsers revalidate instead of downloading again.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// A quoted hash of the content: it changes exactly when the file does.
    etag: HeaderValue,
}

impl Asset {
    fn new(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Self {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = body
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let etag = HeaderValue::from_str(&format!("\"{hash:016x}\"")).expect("hex is a valid header");
        Self { name, content_type, body, etag }
    }
}

static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        Asset::new("chat.css", "text/css; charset=utf-8", include_bytes!("../../assets/chat.css")),
        Asset::new("chat.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/chat.js")),
    ]
});

pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == file) else {
        return AppError::NotFound(format!("no such asset: {file}")).into_response();
    };
    let validators =
        [(header::ETAG, asset.etag.clone()), (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))];
    if headers.get(header::IF_NONE_MATCH) == Some(&asset.etag) {
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))];
    (content_type, validators, asset.body).into_response()
}
