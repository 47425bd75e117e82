//! `SPINE_SITES`: static files the gateway serves beside the API, for apps that
//! are a page and supabase-js (an example's page, a small dashboard): one origin
//! for the page and the API it calls, so no CORS and the session's cookies and
//! storage stay with the project. Each mount is `/path=directory`; files are
//! served by tower-http's `ServeDir` (no listing, no path escapes), revalidated
//! on every load (`no-cache`), never sniffed.

use axum::http::{header, HeaderValue};
use axum::Router;
use std::path::PathBuf;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// Paths the API owns: a site may not shadow them.
const RESERVED: &[&str] = &[
    "/auth",
    "/rest",
    "/realtime",
    "/functions",
    "/studio",
    "/health",
    "/metrics",
];

/// One mount: URL path prefix and the directory behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub path: String,
    pub dir: PathBuf,
}

/// Reads `SPINE_SITES` (`/path=dir,…`); refuses a path the API owns, a path
/// given twice, or anything that is not `/segment[/segment…]`.
pub fn parse(spec: &str) -> Result<Vec<Site>, String> {
    let mut sites: Vec<Site> = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (path, dir) = entry
            .split_once('=')
            .ok_or_else(|| format!("\"{entry}\" is not /path=directory"))?;
        let path = path.trim().trim_end_matches('/').to_string();
        let well_formed = path.starts_with('/')
            && path.len() > 1
            && path[1..].split('/').all(|s| {
                !s.is_empty()
                    && s != "."
                    && s != ".."
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if !well_formed {
            return Err(format!(
                "\"{path}\": a site's path is /name[/name…] (letters, digits, - _ .)"
            ));
        }
        if let Some(r) = RESERVED
            .iter()
            .find(|r| path == **r || path.starts_with(&format!("{r}/")))
        {
            return Err(format!("\"{path}\": {r} is the API's"));
        }
        if sites.iter().any(|s| s.path == path) {
            return Err(format!("\"{path}\" is given twice"));
        }
        let dir = dir.trim();
        if dir.is_empty() {
            return Err(format!("\"{path}\": no directory"));
        }
        sites.push(Site {
            path,
            dir: PathBuf::from(dir),
        });
    }
    Ok(sites)
}

/// The routes serving `sites` (a missing directory answers 404, so a site can
/// be mounted before it is built).
pub fn router(sites: &[Site]) -> Router {
    let mut router = Router::new();
    for site in sites {
        let files = ServeDir::new(&site.dir).append_index_html_on_directories(true);
        router = router.nest_service(&site.path, files);
    }
    router
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse(" /hub=examples/hub/web , /vendor/supabase-js=node_modules/x/ ").unwrap(),
            vec![
                Site {
                    path: "/hub".into(),
                    dir: "examples/hub/web".into()
                },
                Site {
                    path: "/vendor/supabase-js".into(),
                    dir: "node_modules/x/".into()
                },
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        for (bad, why) in [
            ("/hub", "is not /path=directory"),
            ("hub=dir", "a site's path"),
            ("/=dir", "a site's path"),
            ("/a/../b=dir", "a site's path"),
            ("/rest=dir", "the API's"),
            ("/studio/x=dir", "the API's"),
            ("/a=x,/a=y", "twice"),
            ("/a=", "no directory"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
