//! `/studio`: Spine Studio, the web console (`studio/`, Vite + Preact). Its
//! built files (`studio/dist`, committed and checked against a fresh build by
//! `cargo xtask test`) are embedded in the binary, so nothing but the gateway
//! runs in production. The console is a client like any other: it signs in
//! through `/auth/v1` (or with the service key) and reads through `/rest/v1`
//! and `/realtime/v1` under the caller's RLS; it has no API of its own beyond
//! `config.json`, which tells it the (public) anon key.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{extract::Path, Json, Router};
use serde_json::json;

#[derive(rust_embed::Embed)]
#[folder = "../studio/dist/"]
struct Assets;

/// Scripts, styles and connections from the gateway's own origin only; no
/// framing (clickjacking an operator's console).
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The `/studio` routes; `anon_key` is what user sign-in starts from.
pub fn router(anon_key: String) -> Router {
    Router::new()
        .route("/studio", get(|| async { Redirect::permanent("/studio/") }))
        .route("/studio/", get(|| async { asset("index.html") }))
        .route(
            "/studio/config.json",
            get(move || {
                let anon_key = anon_key.clone();
                async move { Json(json!({ "anonKey": anon_key })) }
            }),
        )
        .route(
            "/studio/{*path}",
            get(|Path(path): Path<String>| async move { asset(&path) }),
        )
}

fn asset(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return crate::error::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no Studio file {path:?}"),
        )
        .into_response();
    };
    let mut r = (StatusCode::OK, file.data.into_owned()).into_response();
    let h = r.headers_mut();
    if let Ok(mime) = HeaderValue::from_str(file.metadata.mimetype()) {
        h.insert(header::CONTENT_TYPE, mime);
    }
    // Vite names assets by their content: they never change under a name.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_console_is_embedded() {
        let index = Assets::get("index.html").expect("studio/dist/index.html");
        let text = String::from_utf8_lossy(&index.data);
        assert!(text.contains("/studio/assets/"), "built with base /studio/");
        assert!(Assets::iter().any(|f| f.starts_with("assets/") && f.ends_with(".js")));
    }

    #[test]
    fn files_have_their_type_and_caching() {
        let r = asset("index.html");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(asset("nope.js").status(), StatusCode::NOT_FOUND);
    }
}
