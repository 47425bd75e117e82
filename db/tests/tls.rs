//! spine-db against the dev stack's Postgres, which has TLS on with a certificate
//! for `localhost` and `127.0.0.1` signed by the CA in `SPINE_PG_SSLROOTCERT`:
//! what each `sslmode` gets, as the server sees it (`pg_stat_ssl`), how a refused
//! certificate is reported, and the pool over TLS.

use spine_db::{DbConfig, Error, Pool, PoolOptions};
use std::time::Duration;

/// `postgres://<user>@<host>:<port>/<db>?<params>`: the stack's database by
/// another host name or with other parameters.
fn url(host: &str, params: &str) -> String {
    let stack = DbConfig::parse(&spine_tests::database_url()).expect("DATABASE_URL parses");
    let pg = stack.pg_config();
    format!(
        "postgres://{}@{host}:{}/{}?{params}",
        pg.get_user().unwrap_or("postgres"),
        pg.get_ports().first().copied().unwrap_or(5432),
        pg.get_dbname().unwrap_or("postgres"),
    )
}

fn port() -> u16 {
    let stack = DbConfig::parse(&spine_tests::database_url()).expect("DATABASE_URL parses");
    stack
        .pg_config()
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
}

/// Whether the server's backend for a connection made from `url` is encrypted.
async fn encrypted(url: &str) -> Result<bool, Error> {
    let db = DbConfig::parse(url)?;
    let (client, connection) = db.connect().await?;
    let driver = tokio::spawn(connection);
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    drop(client);
    let _ = driver.await;
    Ok(ssl)
}

/// A CA the stack's certificate was not signed by, as a PEM file.
fn wrong_root() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let path = std::env::temp_dir().join(format!("spine-db-wrong-ca-{}.crt", std::process::id()));
    std::fs::write(&path, cert.pem()).unwrap();
    path.to_string_lossy().into_owned()
}

/// sslmode=require: encrypted, with no root configured at all.
#[tokio::test]
async fn require_is_encrypted() {
    assert!(encrypted(&url("127.0.0.1", "sslmode=require"))
        .await
        .unwrap());
    assert!(encrypted(&url("localhost", "sslmode=require"))
        .await
        .unwrap());
}

/// No sslmode is libpq's `prefer`: encrypted when the server offers TLS; also
/// with only `hostaddr` (no name for TLS: the address stands in).
#[tokio::test]
async fn prefer_is_the_default_and_encrypts() {
    assert!(encrypted(&url("127.0.0.1", "application_name=prefer"))
        .await
        .unwrap());
    let dsn = format!(
        "hostaddr=127.0.0.1 port={} user=postgres dbname=postgres",
        port()
    );
    assert!(encrypted(&dsn).await.unwrap());
    let ca = spine_tests::pg_sslrootcert();
    assert!(
        encrypted(&format!("{dsn} sslmode=verify-full sslrootcert={ca}"))
            .await
            .unwrap()
    );
}

/// sslmode=disable: a plain session, on a server that offers TLS.
#[tokio::test]
async fn disable_is_plain() {
    assert!(!encrypted(&url("127.0.0.1", "sslmode=disable"))
        .await
        .unwrap());
    let dsn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        port()
    );
    assert!(!encrypted(&dsn).await.unwrap());
}

/// verify-full with the stack's CA: the chain and the name (DNS and IP) check out.
#[tokio::test]
async fn verify_full_with_the_stack_ca() {
    let ca = spine_tests::pg_sslrootcert();
    for host in ["localhost", "127.0.0.1"] {
        let url = url(host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        assert!(encrypted(&url).await.unwrap(), "{url}");
    }
    // The key=value form, the root file quoted.
    let dsn = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{ca}'",
        port()
    );
    assert!(encrypted(&dsn).await.unwrap());
}

/// verify-full against a root that did not sign the server's certificate fails,
/// saying so and naming the root file; verify-ca too; the password never shows.
#[tokio::test]
async fn verify_against_a_wrong_root_fails_clearly() {
    let wrong = wrong_root();
    for mode in ["verify-full", "verify-ca"] {
        let url = url(
            "localhost",
            &format!("sslmode={mode}&sslrootcert={wrong}&password=hunter2"),
        );
        let err = encrypted(&url).await.expect_err("a wrong root must fail");
        let text = err.to_string();
        assert!(text.contains("invalid peer certificate"), "{text}");
        assert!(
            text.contains(&format!(
                "sslmode={mode}: the server's certificate is not signed by a CA in sslrootcert={wrong}"
            )),
            "{text}"
        );
        assert!(
            text.starts_with("connecting to postgres://postgres@localhost:"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
    let _ = std::fs::remove_file(wrong);
}

/// verify-full also checks the name: connecting to 127.0.0.1 under a name the
/// certificate does not list fails, while verify-ca (chain only) connects.
#[tokio::test]
async fn verify_full_checks_the_host_name() {
    let ca = spine_tests::pg_sslrootcert();
    let dsn = |mode: &str| {
        format!(
            "host=db.spine.invalid hostaddr=127.0.0.1 port={} user=postgres dbname=postgres \
             sslmode={mode} sslrootcert={ca}",
            port()
        )
    };
    let err = encrypted(&dsn("verify-full"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not name this host"), "{err}");
    assert!(encrypted(&dsn("verify-ca")).await.unwrap());
}

/// A root file that cannot be read fails at parse time, naming the file.
#[test]
fn missing_root_file_is_a_clear_error() {
    let err = DbConfig::parse(
        "postgres://u:pw@localhost/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sslrootcert=/nonexistent/ca.crt"), "{err}");
    assert!(!err.contains("pw@"), "{err}");
}

/// The pool over verify-full: sessions are encrypted, the status counts them, a
/// caller waits at most `wait_timeout` when all are lent, and a session dropped
/// busy is closed instead of going back.
#[tokio::test]
async fn pool_over_tls() {
    let ca = spine_tests::pg_sslrootcert();
    let db = DbConfig::parse(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .unwrap();
    let pool = Pool::new(
        &db,
        PoolOptions {
            max_size: 2,
            wait_timeout: Duration::from_millis(200),
            ..PoolOptions::default()
        },
    );
    let a = pool.get().await.unwrap();
    let mut b = pool.get().await.unwrap();
    for s in [&a, &b] {
        let ssl: bool = s
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl);
    }
    let status = pool.status();
    assert_eq!((status.max_size, status.size, status.available), (2, 2, 0));
    let err = pool
        .get()
        .await
        .err()
        .expect("all lent: the wait times out");
    assert!(matches!(err, Error::PoolTimeout { .. }), "{err}");
    assert!(
        err.to_string().contains("no free database session"),
        "{err}"
    );

    drop(a);
    assert_eq!(pool.status().available, 1);
    b.mark_busy();
    drop(b);
    let status = pool.status();
    assert_eq!(
        (status.size, status.available),
        (1, 1),
        "the busy one is closed"
    );
}
