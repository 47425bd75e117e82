//! `SPINE_SITES`: directories served beside the API. A mounted page and its
//! files come back with their type, `no-cache` and `nosniff`; a directory
//! serves its index.html; paths that climb out of the directory, or files that
//! are not there, are 404; the API's paths stay the API's; a mount on them
//! stops the gateway at start with the reason.

use spine_tests::proc::tempdir::TempDir;
use spine_tests::proc::{free_port, wait_until, ChildGuard};
use std::time::Duration;

const SECRET: &str = "sites-test-secret-sites-test-secret-sites-test";

fn gateway(port: u16, sites: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_spine-gateway"));
    cmd.env("DATABASE_URL", spine_tests::database_url())
        .env("SPINE_JWT_SECRET", SECRET)
        .env("SPINE_GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env("SPINE_SITES", sites)
        .env("RUST_LOG", "warn")
        .env_remove("NATS_URL");
    cmd
}

#[tokio::test]
async fn mounted_directories_are_served_beside_the_api() {
    let dir = TempDir::new();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("js")).unwrap();
    std::fs::write(site.join("index.html"), "<!doctype html><title>hub</title>").unwrap();
    std::fs::write(site.join("js/app.js"), "console.log('hub')").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "outside the site").unwrap();
    let port = free_port();
    let _gateway = ChildGuard(
        gateway(port, &format!("/apps/hub={}", site.display()))
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    wait_until("the gateway is up", Duration::from_secs(30), || async {
        http.get(format!("{base}/health/live")).send().await.is_ok()
    })
    .await;

    let page = http.get(format!("{base}/apps/hub/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(page.headers()["cache-control"], "no-cache");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(page.text().await.unwrap().contains("<title>hub</title>"));
    let script = http
        .get(format!("{base}/apps/hub/js/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    for escape in [
        "/apps/hub/../secret.txt",
        "/apps/hub/%2e%2e/secret.txt",
        "/apps/hub/js/..%2f..%2fsecret.txt",
        "/apps/hub/nope.js",
    ] {
        let r = http.get(format!("{base}{escape}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{escape}");
        assert!(
            !r.text().await.unwrap().contains("outside the site"),
            "{escape}"
        );
    }
    // The API is still the API.
    let live = http
        .get(format!("{base}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}

#[test]
fn a_mount_on_the_apis_paths_stops_the_gateway() {
    let out = gateway(free_port(), "/rest=/tmp").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SPINE_SITES") && stderr.contains("/rest is the API's"),
        "{stderr}"
    );
}
