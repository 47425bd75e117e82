//! `/auth/v1` against a real database (DATABASE_URL; a visible SKIP without
//! one): the router runs in process, each request carries a peer address as
//! `ConnectInfo`, and every test uses its own emails so tests run in parallel.
//! The migration is applied first (it is idempotent).

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use spine_core::signing::Signer;
use spine_functions::jwt::{KeySettings, Keys};
use spine_gateway::auth::{self, AuthOptions, AuthSettings, Limit, RateLimits};
use spine_gateway::keys::{project_keys, ApiKeys};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const SECRET: &str = "auth-test-secret-auth-test-secret-auth-test";
const MIGRATION: &str = include_str!("../../migrations/20261206000000_auth_users.sql");

struct T {
    app: Router,
    db: tokio_postgres::Client,
    anon: String,
    service: String,
    keys: Arc<ApiKeys>,
    peer: SocketAddr,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn setup() -> Option<T> {
    setup_with(AuthOptions::default()).await
}

async fn setup_with(options: AuthOptions) -> Option<T> {
    setup_signing(options, Signer::hs256(SECRET.as_bytes())).await
}

/// `/auth/v1` signing access tokens with `signer`; its requests verify tokens
/// with the secret and, for an ES256 signer, its public key.
async fn setup_signing(options: AuthOptions, signer: Signer) -> Option<T> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("SKIP: DATABASE_URL is not set; /auth/v1 tests need a database");
        return None;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = spine_db::DbConfig::parse(&url).expect("DATABASE_URL parses");
    let (client, connection) = db.connect().await.expect("connecting to DATABASE_URL");
    tokio::spawn(connection);
    // Tests start together: one applies the migration at a time (two
    // concurrent CREATE TYPEs on a fresh database would collide).
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(20261206); {MIGRATION}; COMMIT;"
        ))
        .await
        .expect("the migration applies");
    let pool = spine_db::Pool::new(&db, spine_db::PoolOptions::default());
    let mut settings = KeySettings {
        secret: Some(SECRET.into()),
        api_keys: spine_core::auth::ApiKeys {
            publishable: None,
            secret: Some("sb_secret_test".into()),
        },
        ..Default::default()
    };
    if let Signer::Es256 { .. } = signer {
        settings.own_jwks = Some(signer.jwks().to_string());
    }
    let keys = Arc::new(ApiKeys::new(Arc::new(Keys::load(settings).await.unwrap())));
    let app = auth::router_with(
        pool,
        keys.clone(),
        AuthSettings {
            signer: Arc::new(signer),
            jwt_exp_secs: 3600,
        },
        options,
    );
    let (anon, service) = project_keys(SECRET);
    let b = uuid::Uuid::new_v4().into_bytes();
    let peer = SocketAddr::from(([10, b[0], b[1], b[2]], 40000));
    Some(T {
        app,
        db: client,
        anon,
        service,
        keys,
        peer,
    })
}

fn email() -> String {
    format!("u-{}@Example.test", uuid::Uuid::new_v4())
}

impl T {
    async fn send(&self, method: Method, path: &str, bearer: Option<&str>, body: Body) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json;charset=UTF-8")
            .header("apikey", &self.anon)
            .header("x-supabase-api-version", "2024-01-01")
            .extension(ConnectInfo(self.peer));
        if let Some(token) = bearer {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("{status}: not JSON: {}", String::from_utf8_lossy(&bytes))
            })
        };
        // Every response, error or not, tells auth-js to read `code`.
        assert_eq!(headers["x-supabase-api-version"], "2024-01-01", "{path}");
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, path: &str, bearer: Option<&str>, body: Value) -> Reply {
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        self.send(method, path, bearer, body).await
    }

    async fn signup(&self, email: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/signup",
            Some(&self.anon.clone()),
            json!({"email": email, "password": password, "data": {"name": "Alice"},
                   "gotrue_meta_security": {"captcha_token": null}}),
        )
        .await
    }

    async fn sign_in(&self, email: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/token?grant_type=password",
            Some(&self.anon.clone()),
            json!({"email": email, "password": password,
                   "gotrue_meta_security": {"captcha_token": null}}),
        )
        .await
    }

    async fn refresh(&self, token: &str) -> Reply {
        self.call(
            Method::POST,
            "/token?grant_type=refresh_token",
            Some(&self.anon.clone()),
            json!({"refresh_token": token}),
        )
        .await
    }

    /// Users with this email, their sessions and refresh tokens.
    async fn rows(&self, email: &str) -> (i64, i64, i64) {
        let row = self
            .db
            .query_one(
                "SELECT (SELECT count(*) FROM auth.users WHERE email = lower($1)), \
                   (SELECT count(*) FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id \
                      WHERE u.email = lower($1)), \
                   (SELECT count(*) FROM auth.refresh_tokens t JOIN auth.users u \
                      ON u.id::text = t.user_id WHERE u.email = lower($1))",
                &[&email],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    }
}

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.body["code"], code, "{}", r.body);
    assert_eq!(r.body["error_code"], code, "{}", r.body);
    assert!(
        r.body["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
}

fn assert_session(r: &Reply, email: &str) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let b = &r.body;
    assert!(b["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(b["refresh_token"].as_str().is_some_and(|t| t.len() >= 43));
    assert_eq!(b["token_type"], "bearer");
    assert_eq!(b["expires_in"], 3600);
    assert!(b["expires_at"].as_u64().unwrap() > 1_700_000_000);
    let u = &b["user"];
    assert_eq!(u["email"], email.to_lowercase());
    assert_eq!(u["aud"], "authenticated");
    assert_eq!(u["role"], "authenticated");
    assert_eq!(u["phone"], "");
    assert_eq!(u["app_metadata"]["provider"], "email");
    assert_eq!(u["app_metadata"]["providers"], json!(["email"]));
    assert_eq!(u["identities"], json!([]));
    assert_eq!(u["is_anonymous"], false);
    for key in [
        "id",
        "created_at",
        "updated_at",
        "last_sign_in_at",
        "email_confirmed_at",
    ] {
        assert!(u[key].as_str().is_some(), "{key} in {u}");
    }
    assert!(u["created_at"].as_str().unwrap().ends_with('Z'));
}

fn token(r: &Reply, key: &str) -> String {
    r.body[key].as_str().unwrap().to_string()
}

const EC_PEM: &[u8] = include_bytes!("../../core/tests/data/jwt/es256-test-only.pem");
const OTHER_EC_PEM: &[u8] = include_bytes!("../../core/tests/data/jwt/es256-other-test-only.pem");

/// With an ES256 signing key (Supabase's JWT signing keys), access tokens are
/// ES256 with the key's id, `/.well-known/jwks.json` serves the public key, and
/// that document alone verifies them (what `auth.getClaims()` does). The
/// HS256 project keys keep working; a token signed by another key under the
/// same id is refused.
#[tokio::test]
async fn es256_tokens_verify_with_the_served_jwks() {
    let signer = Signer::es256_from_pem(EC_PEM).unwrap();
    let Some(t) = setup_signing(AuthOptions::default(), signer).await else {
        return;
    };
    let e = email();
    let r = t.signup(&e, "secret-pw").await;
    assert_session(&r, &e);
    let access = token(&r, "access_token");
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);

    let jwks = t
        .send(Method::GET, "/.well-known/jwks.json", None, Body::empty())
        .await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.headers["cache-control"], "public, max-age=600");
    let key = &jwks.body["keys"][0];
    assert_eq!(jwks.body["keys"].as_array().unwrap().len(), 1);
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert_eq!(
        (key["alg"].as_str(), key["use"].as_str()),
        (Some("ES256"), Some("sig"))
    );
    assert!(
        key.get("d").is_none(),
        "the private key is never served: {key}"
    );

    let offline = spine_core::auth::Verifier::new(None)
        .with_jwks(&jwks.body.to_string())
        .unwrap();
    let claims = offline.verify(&access).unwrap();
    assert_eq!(claims.sub.as_deref(), r.body["user"]["id"].as_str());

    let me = t
        .call(Method::GET, "/user", Some(&access), Value::Null)
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    let service = t
        .call(Method::GET, "/admin/users", Some(&t.service), Value::Null)
        .await;
    assert_eq!(
        service.status,
        StatusCode::OK,
        "HS256 project keys still work"
    );

    let forged = Signer::es256_from_pem(OTHER_EC_PEM).unwrap();
    let mut forged_claims = claims.all.clone();
    forged_claims["role"] = json!("authenticated");
    let Signer::Es256 { key: other, .. } = forged else {
        unreachable!()
    };
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: header.kid.clone(),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256)
        },
        &forged_claims,
        &other,
    )
    .unwrap();
    assert_error(
        &t.call(Method::GET, "/user", Some(&forged), Value::Null)
            .await,
        403,
        "bad_jwt",
    );
}

/// Without a signing key, the JWKS is empty, as GoTrue serves it for a
/// shared secret: clients fall back to asking `/user`.
#[tokio::test]
async fn hs256_serves_an_empty_jwks() {
    let Some(t) = setup().await else { return };
    let jwks = t
        .send(Method::GET, "/.well-known/jwks.json", None, Body::empty())
        .await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.body, json!({"keys": []}));
}

/// Sign-up answers a session whose access token carries GoTrue's claims; the
/// password is stored as a `$2a$` bcrypt hash and the refresh token only as
/// its SHA-256.
#[tokio::test]
async fn signup_returns_a_session_with_gotrue_claims() {
    let Some(t) = setup().await else { return };
    let e = email();
    let r = t.signup(&e, "secret-pw").await;
    assert_session(&r, &e);
    assert_eq!(r.body["user"]["user_metadata"], json!({"name": "Alice"}));

    let access = token(&r, "access_token");
    let caller = t
        .keys
        .caller(Some(&format!("Bearer {access}")), None)
        .await
        .unwrap();
    let c = &caller.claims;
    assert_eq!(caller.role, "authenticated");
    assert_eq!(c["sub"], r.body["user"]["id"]);
    assert_eq!(c["aud"], "authenticated");
    assert_eq!(c["iss"], "spine");
    assert_eq!(c["email"], e.to_lowercase());
    assert_eq!(c["aal"], "aal1");
    assert_eq!(c["amr"][0]["method"], "password");
    assert_eq!(c["is_anonymous"], false);
    assert_eq!(c["user_metadata"]["name"], "Alice");
    assert_eq!(c["app_metadata"]["provider"], "email");
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        3600
    );
    assert!(c["session_id"].as_str().is_some());

    let refresh = token(&r, "refresh_token");
    let row = t
        .db
        .query_one(
            "SELECT u.encrypted_password, \
               (SELECT count(*) FROM auth.refresh_tokens WHERE token = $2), \
               (SELECT count(*) FROM auth.refresh_tokens WHERE token = encode(sha256($2::bytea), 'hex')) \
             FROM auth.users u WHERE u.email = lower($1)",
            &[&e, &refresh],
        )
        .await
        .unwrap();
    let hash: String = row.get(0);
    assert!(hash.starts_with("$2a$10$"), "{hash}");
    assert_eq!(row.get::<_, i64>(1), 0, "the plaintext token is not stored");
    assert_eq!(row.get::<_, i64>(2), 1, "its SHA-256 is");
    assert_eq!(t.rows(&e).await, (1, 1, 1));
}

/// A second sign-up with the same email (any case) is 422
/// `user_already_exists`, and writes nothing.
#[tokio::test]
async fn duplicate_signup_is_user_already_exists() {
    let Some(t) = setup().await else { return };
    let e = email();
    assert_session(&t.signup(&e, "secret-pw").await, &e);
    let r = t.signup(&e.to_uppercase(), "other-pw").await;
    assert_error(&r, 422, "user_already_exists");
    assert_eq!(t.rows(&e).await, (1, 1, 1));
}

/// A short password is 422 `weak_password` with its reasons; a malformed
/// email or a missing password is 400 `validation_failed`; none writes.
#[tokio::test]
async fn weak_password_and_bad_email_are_refused() {
    let Some(t) = setup().await else { return };
    let e = email();
    let r = t.signup(&e, "12345").await;
    assert_error(&r, 422, "weak_password");
    assert_eq!(r.body["weak_password"]["reasons"], json!(["length"]));
    assert_error(
        &t.signup("not-an-email", "secret-pw").await,
        400,
        "validation_failed",
    );
    assert_error(
        &t.signup("a@b..c", "secret-pw").await,
        400,
        "validation_failed",
    );
    let r = t
        .call(Method::POST, "/signup", None, json!({"email": e}))
        .await;
    assert_error(&r, 400, "validation_failed");
    assert_eq!(t.rows(&e).await, (0, 0, 0));
}

/// Sign-in: the right password gives a new session; a wrong password and an
/// unknown email give the same 400 `invalid_credentials` and write nothing.
#[tokio::test]
async fn sign_in_right_wrong_and_unknown() {
    let Some(t) = setup().await else { return };
    let e = email();
    assert_session(&t.signup(&e, "secret-pw").await, &e);
    let r = t.sign_in(&e.to_uppercase(), "secret-pw").await;
    assert_session(&r, &e);
    assert_eq!(t.rows(&e).await, (1, 2, 2));

    let wrong = t.sign_in(&e, "wrong-pw").await;
    assert_error(&wrong, 400, "invalid_credentials");
    assert_eq!(wrong.body["msg"], "Invalid login credentials");
    let unknown = t.sign_in(&email(), "secret-pw").await;
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(unknown.body, wrong.body);
    assert_eq!(t.rows(&e).await, (1, 2, 2));

    // An unknown email costs a bcrypt check too (against a dummy hash): not
    // a tight bound, but without the dummy check it would be ~100x faster.
    let time = |email: String, pw: &'static str| {
        let t = &t;
        async move {
            let start = std::time::Instant::now();
            for _ in 0..3 {
                t.sign_in(&email, pw).await;
            }
            start.elapsed()
        }
    };
    let wrong_pw = time(e.clone(), "wrong-pw").await;
    let unknown_email = time(email(), "wrong-pw").await;
    eprintln!("3 sign-ins: wrong password {wrong_pw:?}, unknown email {unknown_email:?}");
    assert!(
        unknown_email * 2 >= wrong_pw,
        "{unknown_email:?} vs {wrong_pw:?}"
    );
    assert_error(
        &t.call(Method::POST, "/token?grant_type=magic", None, json!({}))
            .await,
        400,
        "validation_failed",
    );
}

/// A refresh rotates the token; using the old one again is 400
/// `refresh_token_already_used` and revokes the whole session: the new token
/// is refused too and the session's access token no longer reads /user.
#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let Some(t) = setup().await else { return };
    let e = email();
    let s = t.signup(&e, "secret-pw").await;
    let r1 = token(&s, "refresh_token");
    let a1 = token(&s, "access_token");

    let s2 = t.refresh(&r1).await;
    assert_session(&s2, &e);
    let r2 = token(&s2, "refresh_token");
    assert_ne!(r1, r2);
    let claims = |tok: String| {
        let keys = t.keys.clone();
        async move {
            keys.caller(Some(&format!("Bearer {tok}")), None)
                .await
                .unwrap()
                .claims
        }
    };
    let a2 = token(&s2, "access_token");
    assert_eq!(
        claims(a1.clone()).await["session_id"],
        claims(a2.clone()).await["session_id"]
    );
    assert_eq!(t.rows(&e).await, (1, 1, 2));
    let me = t.call(Method::GET, "/user", Some(&a2), Value::Null).await;
    assert_eq!(me.status, StatusCode::OK);

    assert_error(&t.refresh(&r1).await, 400, "refresh_token_already_used");
    assert_error(&t.refresh(&r2).await, 400, "refresh_token_already_used");
    let revoked: i64 =
        t.db.query_one(
            "SELECT count(*) FILTER (WHERE revoked) FROM auth.refresh_tokens t \
             JOIN auth.users u ON u.id::text = t.user_id WHERE u.email = lower($1)",
            &[&e],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(revoked, 2);
    let me = t.call(Method::GET, "/user", Some(&a2), Value::Null).await;
    assert_error(&me, 403, "session_not_found");

    assert_error(
        &t.refresh("no-such-token").await,
        400,
        "refresh_token_not_found",
    );
    assert_error(
        &t.call(
            Method::POST,
            "/token?grant_type=refresh_token",
            None,
            json!({}),
        )
        .await,
        400,
        "validation_failed",
    );
}

/// `GET /user` returns the signed-in user; `PUT /user` merges `data` into
/// user_metadata (null removes a key), changes the email, and a new password
/// replaces the old one and ends the user's other sessions.
#[tokio::test]
async fn get_and_update_user() {
    let Some(t) = setup().await else { return };
    let e = email();
    let s = t.signup(&e, "secret-pw").await;
    let access = token(&s, "access_token");
    let other = t.sign_in(&e, "secret-pw").await;

    let me = t
        .call(Method::GET, "/user", Some(&access), Value::Null)
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], s.body["user"]["id"]);
    assert_eq!(me.body["email"], e.to_lowercase());

    let r = t
        .call(
            Method::PUT,
            "/user",
            Some(&access),
            json!({"data": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["user_metadata"],
        json!({"name": "Alice", "plan": "pro"})
    );
    let r = t
        .call(
            Method::PUT,
            "/user",
            Some(&access),
            json!({"data": {"name": null}}),
        )
        .await;
    assert_eq!(r.body["user_metadata"], json!({"plan": "pro"}));

    let r = t
        .call(
            Method::PUT,
            "/user",
            Some(&access),
            json!({"password": "123"}),
        )
        .await;
    assert_error(&r, 422, "weak_password");
    let r = t
        .call(
            Method::PUT,
            "/user",
            Some(&access),
            json!({"password": "new-secret"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_error(
        &t.sign_in(&e, "secret-pw").await,
        400,
        "invalid_credentials",
    );
    assert_session(&t.sign_in(&e, "new-secret").await, &e);
    // The other session ended with the password change.
    assert_error(
        &t.refresh(&token(&other, "refresh_token")).await,
        400,
        "refresh_token_not_found",
    );

    let taken = email();
    assert_session(&t.signup(&taken, "secret-pw").await, &taken);
    let r = t
        .call(Method::PUT, "/user", Some(&access), json!({"email": taken}))
        .await;
    assert_error(&r, 422, "email_exists");
    let fresh = email();
    let r = t
        .call(Method::PUT, "/user", Some(&access), json!({"email": fresh}))
        .await;
    assert_eq!(r.body["email"], fresh.to_lowercase());
    assert_session(&t.sign_in(&fresh, "new-secret").await, &fresh);
}

/// Sign-out: `local` ends this session (its refresh token is gone and its
/// access token gets 403 `session_not_found` on /user), `others` keeps it,
/// `global` ends all. Each answers 204.
#[tokio::test]
async fn logout_scopes() {
    let Some(t) = setup().await else { return };
    let e = email();
    let a = t.signup(&e, "secret-pw").await;
    let b = t.sign_in(&e, "secret-pw").await;
    let c = t.sign_in(&e, "secret-pw").await;
    assert_eq!(t.rows(&e).await, (1, 3, 3));

    let r = t
        .call(
            Method::POST,
            "/logout?scope=local",
            Some(&token(&a, "access_token")),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.body, Value::Null);
    assert_error(
        &t.refresh(&token(&a, "refresh_token")).await,
        400,
        "refresh_token_not_found",
    );
    let me = t
        .call(
            Method::GET,
            "/user",
            Some(&token(&a, "access_token")),
            Value::Null,
        )
        .await;
    assert_error(&me, 403, "session_not_found");
    assert_eq!(t.rows(&e).await, (1, 2, 2));

    let r = t
        .call(
            Method::POST,
            "/logout?scope=others",
            Some(&token(&b, "access_token")),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(t.rows(&e).await, (1, 1, 1));
    assert_error(
        &t.refresh(&token(&c, "refresh_token")).await,
        400,
        "refresh_token_not_found",
    );

    let d = t.sign_in(&e, "secret-pw").await;
    let r = t
        .call(
            Method::POST,
            "/logout",
            Some(&token(&d, "access_token")),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(t.rows(&e).await, (1, 0, 0));
}

/// `/user` without a token is 401 `no_authorization`; a forged or foreign
/// token is 403 `bad_jwt`; the anon key (no `sub`) is 403 `bad_jwt`.
#[tokio::test]
async fn user_needs_a_valid_user_token() {
    let Some(t) = setup().await else { return };
    let r = t.call(Method::GET, "/user", None, Value::Null).await;
    assert_error(&r, 401, "no_authorization");
    let forged = spine_core::auth::sign(
        &json!({"role": "authenticated", "sub": uuid::Uuid::new_v4(), "exp": 4_000_000_000u64}),
        b"another-secret-another-secret-another",
    );
    for bad in [forged.as_str(), "garbage", t.anon.as_str()] {
        let r = t.call(Method::GET, "/user", Some(bad), Value::Null).await;
        assert_error(&r, 403, "bad_jwt");
    }
    let r = t
        .call(Method::POST, "/logout", Some("garbage"), Value::Null)
        .await;
    assert_error(&r, 403, "bad_jwt");
}

/// The admin API with the service key: create (confirmed or not), list with
/// pagination headers, get, update metadata and password, delete; a user
/// token or the anon key is 403 `not_admin`, no key at all 401.
#[tokio::test]
async fn admin_users() {
    let Some(t) = setup().await else { return };
    let svc = t.service.clone();
    let e = email();
    let r = t
        .call(
            Method::POST,
            "/admin/users",
            Some(&svc),
            json!({"email": e, "password": "secret-pw", "email_confirm": true,
                   "user_metadata": {"team": "a"}, "app_metadata": {"tier": 2}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["email"], e.to_lowercase());
    assert_eq!(r.body["user_metadata"], json!({"team": "a"}));
    assert_eq!(
        r.body["app_metadata"],
        json!({"provider": "email", "providers": ["email"], "tier": 2})
    );
    assert_eq!(
        t.rows(&e).await,
        (1, 0, 0),
        "no session for an admin-created user"
    );
    assert_error(
        &t.call(
            Method::POST,
            "/admin/users",
            Some(&svc),
            json!({"email": e}),
        )
        .await,
        422,
        "email_exists",
    );
    let user_session = t.sign_in(&e, "secret-pw").await;
    assert_session(&user_session, &e);

    let unconfirmed = email();
    let r = t
        .call(
            Method::POST,
            "/admin/users",
            Some(&svc),
            json!({"email": unconfirmed, "password": "secret-pw"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.get("email_confirmed_at").is_none());
    assert_error(
        &t.sign_in(&unconfirmed, "secret-pw").await,
        400,
        "email_not_confirmed",
    );

    let r = t
        .call(
            Method::GET,
            "/admin/users?page=1&per_page=1",
            Some(&svc),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["aud"], "authenticated");
    assert_eq!(r.body["users"].as_array().unwrap().len(), 1);
    let total: i64 = r.headers["x-total-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(total >= 2);
    let link = r.headers["link"].to_str().unwrap();
    assert!(
        link.contains("rel=\"next\"") && link.contains("rel=\"last\""),
        "{link}"
    );
    assert_error(
        &t.call(Method::GET, "/admin/users?page=0", Some(&svc), Value::Null)
            .await,
        400,
        "validation_failed",
    );

    let path = format!("/admin/users/{id}");
    let r = t.call(Method::GET, &path, Some(&svc), Value::Null).await;
    assert_eq!(r.body["id"], id.as_str());
    let r = t
        .call(
            Method::PUT,
            &path,
            Some(&svc),
            json!({"user_metadata": {"team": "b", "x": 1}, "app_metadata": {"tier": null},
                   "password": "changed-pw", "ban_duration": "none"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["user_metadata"], json!({"team": "b", "x": 1}));
    assert_eq!(
        r.body["app_metadata"],
        json!({"provider": "email", "providers": ["email"]})
    );
    // A new password ends every session.
    assert_error(
        &t.refresh(&token(&user_session, "refresh_token")).await,
        400,
        "refresh_token_not_found",
    );
    let again = t.sign_in(&e, "changed-pw").await;
    assert_session(&again, &e);

    // Banned: no sign-in, no refresh.
    let r = t
        .call(
            Method::PUT,
            &path,
            Some(&svc),
            json!({"ban_duration": "24h"}),
        )
        .await;
    assert!(r.body["banned_until"].as_str().is_some(), "{}", r.body);
    assert_error(&t.sign_in(&e, "changed-pw").await, 400, "user_banned");
    assert_error(
        &t.refresh(&token(&again, "refresh_token")).await,
        400,
        "user_banned",
    );

    // Not an admin.
    let user_token = token(&again, "access_token");
    for (bearer, status, code) in [
        (Some(user_token.as_str()), 403, "not_admin"),
        (Some(t.anon.as_str()), 403, "not_admin"),
        (Some("garbage"), 403, "bad_jwt"),
    ] {
        let r = t
            .call(Method::GET, "/admin/users", bearer, Value::Null)
            .await;
        assert_error(&r, status, code);
        let r = t
            .call(
                Method::DELETE,
                &path,
                bearer,
                json!({"should_soft_delete": false}),
            )
            .await;
        assert_error(&r, status, code);
    }
    // No key at all (the helper always sends the anon apikey: send by hand).
    let req = Request::builder()
        .uri("/admin/users")
        .body(Body::empty())
        .unwrap();
    let res = t.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(t.rows(&e).await.0, 1, "refused deletes wrote nothing");

    let r = t
        .call(
            Method::DELETE,
            &path,
            Some(&svc),
            json!({"should_soft_delete": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({}));
    assert_eq!(t.rows(&e).await, (0, 0, 0));
    let r = t.call(Method::GET, &path, Some(&svc), Value::Null).await;
    assert_error(&r, 404, "user_not_found");
    let r = t.call(Method::DELETE, &path, Some(&svc), Value::Null).await;
    assert_error(&r, 404, "user_not_found");
    let r = t
        .call(
            Method::GET,
            "/admin/users/not-a-uuid",
            Some(&svc),
            Value::Null,
        )
        .await;
    assert_error(&r, 400, "validation_failed");
}

/// An `sb_secret_…` key in `apikey` acts as the service role for the admin
/// API (supabase-js sends the key there).
#[tokio::test]
async fn admin_with_a_secret_key() {
    let Some(t) = setup().await else { return };
    let req = Request::builder()
        .uri("/admin/users?per_page=1")
        .header("apikey", "sb_secret_test")
        .body(Body::empty())
        .unwrap();
    let res = t.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// Guessing one account's password from one address: after the burst every
/// attempt, even with the right password, is 429 `over_request_rate_limit`
/// with `Retry-After`; another address is not affected. Sign-ups are limited
/// per address too.
#[tokio::test]
async fn brute_force_is_rate_limited() {
    let limit = Limit {
        burst: 5,
        per: Duration::from_secs(300),
    };
    let options = AuthOptions {
        limits: RateLimits {
            sign_in: limit,
            sign_up: limit,
        },
        ..AuthOptions::default()
    };
    let Some(mut t) = setup_with(options).await else {
        return;
    };
    let e = email();
    assert_session(&t.signup(&e, "secret-pw").await, &e);
    for _ in 0..5 {
        assert_error(&t.sign_in(&e, "guess-pw").await, 400, "invalid_credentials");
    }
    let r = t.sign_in(&e, "secret-pw").await;
    assert_error(&r, 429, "over_request_rate_limit");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(t.rows(&e).await, (1, 1, 1));

    // Sign-ups: 1 done, 4 more, then 429 with nothing written.
    for _ in 0..4 {
        let x = email();
        assert_session(&t.signup(&x, "secret-pw").await, &x);
    }
    let x = email();
    assert_error(
        &t.signup(&x, "secret-pw").await,
        429,
        "over_request_rate_limit",
    );
    assert_eq!(t.rows(&x).await, (0, 0, 0));

    t.peer = SocketAddr::from(([10, 255, 0, 1], 40000));
    assert_session(&t.sign_in(&e, "secret-pw").await, &e);
}

/// Hostile bodies: malformed JSON is 400 `bad_json`, a wrongly typed field
/// too, a body over the limit 413 — each with a JSON body and nothing written.
/// Unknown paths and methods answer JSON too.
#[tokio::test]
async fn malformed_and_oversized_bodies() {
    let Some(t) = setup().await else { return };
    let e = email();
    let raw = format!(r#"{{"email":"{e}","password":"secret-pw""#);
    let r = t.send(Method::POST, "/signup", None, Body::from(raw)).await;
    assert_error(&r, 400, "bad_json");
    assert!(!r.body["msg"].as_str().unwrap().contains("secret-pw"));
    let r = t
        .call(
            Method::POST,
            "/signup",
            None,
            json!({"email": e, "password": 123456}),
        )
        .await;
    assert_error(&r, 400, "bad_json");
    assert!(!r.body["msg"].as_str().unwrap().contains("123456"));
    let r = t
        .call(
            Method::POST,
            "/signup",
            None,
            json!({"email": e, "password": "secret-pw", "data": "not an object"}),
        )
        .await;
    assert_error(&r, 400, "validation_failed");

    let big = json!({"email": e, "password": "secret-pw", "data": {"blob": "x".repeat(1 << 20)}});
    let r = t
        .send(Method::POST, "/signup", None, Body::from(big.to_string()))
        .await;
    assert_error(&r, 413, "request_too_large");
    let r = t
        .send(
            Method::POST,
            "/token?grant_type=password",
            None,
            Body::from(big.to_string()),
        )
        .await;
    assert_error(&r, 413, "request_too_large");
    assert_eq!(t.rows(&e).await, (0, 0, 0));

    assert_error(
        &t.call(Method::GET, "/nope", None, Value::Null).await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::DELETE, "/signup", None, Value::Null).await,
        405,
        "method_not_allowed",
    );
}

/// `GET /settings` in GoTrue's shape: email sign-up on, autoconfirm on.
#[tokio::test]
async fn settings() {
    let Some(t) = setup().await else { return };
    let r = t.call(Method::GET, "/settings", None, Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["external"]["email"], true);
    assert_eq!(r.body["disable_signup"], false);
    assert_eq!(r.body["mailer_autoconfirm"], true);
}
