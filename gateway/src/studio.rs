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

/// Scripts, styles and connections from the gateway's own origin only (and the
/// search server's, for the search box); no framing (clickjacking an
/// operator's console).
fn csp(search_origin: Option<&str>) -> String {
    let connect = match search_origin {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_string(),
    };
    format!(
        "default-src 'self'; connect-src {connect}; img-src 'self' data:; \
         style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
}

/// The origin (scheme://host:port) of `SPINE_SEARCH_PUBLIC_URL`, refused at
/// start when it is not an http(s) URL: it goes into a security header.
pub fn origin(url: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let parsed = url::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("SPINE_SEARCH_PUBLIC_URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        anyhow::bail!("SPINE_SEARCH_PUBLIC_URL {url:?}: not an http(s) URL");
    }
    Ok(Some(parsed.origin().ascii_serialization()))
}

/// The `/studio` routes; `anon_key` is what user sign-in starts from;
/// `search_origin` the one other origin the console may connect to.
pub fn router(anon_key: String, search_origin: Option<String>) -> Router {
    let policy = HeaderValue::from_str(&csp(search_origin.as_deref()))
        .expect("an origin from a parsed URL is a valid header value");
    let config = json!({ "anonKey": anon_key, "searchOrigin": search_origin });
    Router::new()
        .route("/studio", get(|| async { Redirect::permanent("/studio/") }))
        .route(
            "/studio/",
            get({
                let policy = policy.clone();
                || async move { asset("index.html", policy) }
            }),
        )
        .route(
            "/studio/config.json",
            get(move || {
                let config = config.clone();
                async move { Json(config) }
            }),
        )
        .route(
            "/studio/{*path}",
            get(|Path(path): Path<String>| async move { asset(&path, policy) }),
        )
}

fn asset(path: &str, policy: HeaderValue) -> Response {
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
    h.insert(header::CONTENT_SECURITY_POLICY, policy);
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

    fn policy() -> HeaderValue {
        HeaderValue::from_str(&csp(None)).unwrap()
    }

    #[test]
    fn files_have_their_type_and_caching() {
        let r = asset("index.html", policy());
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(
            asset("../Cargo.toml", policy()).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(asset("nope.js", policy()).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_search_origin_is_the_only_other_connection() {
        assert_eq!(origin(None).unwrap(), None);
        assert_eq!(origin(Some("")).unwrap(), None);
        let o = origin(Some("http://127.0.0.1:7700/some/path")).unwrap();
        assert_eq!(o.as_deref(), Some("http://127.0.0.1:7700"));
        assert!(csp(o.as_deref()).contains("connect-src 'self' http://127.0.0.1:7700;"));
        assert!(csp(None).contains("connect-src 'self';"));
        // Anything else would widen or break the policy header.
        for bad in [
            "javascript:alert(1)",
            "data:text/plain,x",
            "not a url",
            "file:///etc",
        ] {
            assert!(origin(Some(bad)).is_err(), "{bad}");
        }
    }
}
