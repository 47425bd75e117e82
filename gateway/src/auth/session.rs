//! What a user does: sign up, sign in, refresh, read and update themselves,
//! sign out (GoTrue's `signup.go`, `token.go`, `user.go`, `logout.go`).
//!
//! Sign-up confirms the email at once (GoTrue's `mailer_autoconfirm`): there is
//! no mailer, so the answer is a session. Refresh tokens rotate on every use;
//! a token used a second time (no reuse interval) revokes every token of its
//! session and ends the session, as GoTrue does for a stolen token.

use super::db::Conn;
use super::error::AuthError;
use super::tokens::{self, AccessClaims};
use super::users::{self, NewUser, User};
use super::{header, json_body, password, Auth, ClientIp, State};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use uuid::Uuid;

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn param(query: &Params, name: &str) -> Option<String> {
    query.as_ref().ok().and_then(|q| q.0.get(name).cloned())
}

/// A session answer for `user` in session `session` (started at `started`).
fn session_answer(auth: &Auth, user: &User, session: Uuid, started: u64, refresh: &str) -> Value {
    let session_id = session.to_string();
    tokens::session_body(
        &auth.settings.signer,
        &AccessClaims {
            user: &user.json,
            session_id: &session_id,
            signed_in_at: started,
            now: tokens::now_secs(),
            exp_secs: auth.settings.jwt_exp_secs,
        },
        refresh,
    )
}

fn new_refresh_token() -> Result<(String, String), AuthError> {
    tokens::new_refresh_token().map_err(|e| {
        tracing::error!(error = %e, "auth: no randomness for a refresh token");
        AuthError::internal()
    })
}

/// Starts a session for `user` in the open transaction; the user as it is
/// after the sign-in is recorded, and the session answer.
async fn start_session(
    auth: &Auth,
    conn: &Conn,
    user: Uuid,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
) -> Result<Value, AuthError> {
    let (refresh, hash) = new_refresh_token()?;
    let ua = header(headers, "user-agent");
    let (session, started) =
        users::new_session(conn, user, &hash, ua, ip.map(|ip| ip.to_string())).await?;
    let user = users::touch_sign_in(conn, user).await?;
    Ok(session_answer(auth, &user, session, started, &refresh))
}

#[derive(Deserialize)]
pub struct SignUp {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    data: Option<Value>,
}

/// `POST /signup` `{email, password, data}` → a session (email confirmed).
pub async fn signup(
    axum::extract::State(auth): State,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AuthError> {
    auth.limiters.sign_up(ip)?;
    let req: SignUp = json_body(body)?;
    let email = match (req.email.as_deref(), req.phone.as_deref()) {
        (Some(e), _) if !e.trim().is_empty() => users::valid_email(e)?,
        (_, Some(p)) if !p.trim().is_empty() => {
            return Err(AuthError::bad_request(
                "phone_provider_disabled",
                "Phone signups are disabled",
            ))
        }
        _ => {
            return Err(AuthError::validation(
                "To signup, please provide your email",
            ))
        }
    };
    let password = req
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AuthError::validation("Signup requires a valid password"))?;
    password::check_strength(&password)?;
    let user_metadata = users::metadata(req.data, "data")?.unwrap_or_else(|| json!({}));
    let already = || {
        AuthError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "user_already_exists",
            "User already registered",
        )
    };
    let mut conn = Conn::get(&auth.pool).await?;
    if users::by_email(&conn, &email).await?.is_some() {
        return Err(already());
    }
    let hash = password::hash(password).await?;
    conn.begin().await?;
    let result = async {
        let user = users::insert(
            &conn,
            &NewUser {
                email: &email,
                password_hash: Some(&hash),
                confirmed: true,
                signed_in: false,
                role: "authenticated",
                app_metadata: users::email_app_metadata(),
                user_metadata,
            },
            already(),
        )
        .await?;
        start_session(&auth, &conn, user.id, &headers, ip).await
    }
    .await;
    conn.finish(result).await.map(Json)
}

#[derive(Deserialize)]
pub struct PasswordGrant {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
pub struct RefreshGrant {
    refresh_token: Option<String>,
}

/// `POST /token?grant_type=password|refresh_token`.
pub async fn token(
    state: State,
    ip: ClientIp,
    query: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AuthError> {
    match param(&query, "grant_type").as_deref() {
        Some("password") => sign_in(state, ip, headers, body).await,
        Some("refresh_token") => refresh(state, body).await,
        _ => Err(AuthError::validation("unsupported_grant_type")),
    }
}

async fn sign_in(
    axum::extract::State(auth): State,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AuthError> {
    let req: PasswordGrant = json_body(body)?;
    let email = match (req.email.as_deref(), req.phone.as_deref()) {
        (Some(e), _) if !e.trim().is_empty() => e.trim().to_lowercase(),
        (_, Some(p)) if !p.trim().is_empty() => {
            return Err(AuthError::bad_request(
                "phone_provider_disabled",
                "Phone logins are disabled",
            ))
        }
        _ => return Err(AuthError::validation("missing email or phone")),
    };
    auth.limiters.sign_in(ip, &email)?;
    let mut conn = Conn::get(&auth.pool).await?;
    let user = users::by_email(&conn, &email).await?;
    // One bcrypt check whether or not the user exists (see password::verify).
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let ok = password::verify(req.password.unwrap_or_default(), stored).await?;
    let user = match user {
        Some(u) if ok => u,
        _ => return Err(AuthError::invalid_credentials()),
    };
    if user.banned {
        return Err(AuthError::bad_request("user_banned", "User is banned"));
    }
    if !user.email_confirmed {
        return Err(AuthError::bad_request(
            "email_not_confirmed",
            "Email not confirmed",
        ));
    }
    conn.begin().await?;
    let result = start_session(&auth, &conn, user.id, &headers, ip).await;
    conn.finish(result).await.map(Json)
}

/// What a refresh found: a new session answer, or a reused token.
enum Refreshed {
    Rotated(Value),
    Reused,
}

async fn refresh(
    axum::extract::State(auth): State,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AuthError> {
    let req: RefreshGrant = json_body(body)?;
    let token = req
        .refresh_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthError::validation("refresh_token required"))?;
    let not_found = || {
        AuthError::bad_request(
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
        )
    };
    let old_hash = tokens::hash_refresh_token(&token);
    let mut conn = Conn::get(&auth.pool).await?;
    conn.begin().await?;
    let result = async {
        // FOR UPDATE: two refreshes with one token are serialized; the second
        // sees it revoked and is treated as a reuse.
        let Some(row) = conn
            .query_opt(
                "SELECT id, revoked, session_id FROM auth.refresh_tokens \
                 WHERE token = $1 FOR UPDATE",
                &[&old_hash],
            )
            .await?
        else {
            return Err(not_found());
        };
        let token_id: i64 = row.get(0);
        let revoked: Option<bool> = row.get(1);
        let Some(session) = row.get::<_, Option<Uuid>>(2) else {
            return Err(not_found());
        };
        if revoked == Some(true) {
            conn.execute(
                "UPDATE auth.refresh_tokens SET revoked = true, updated_at = now() \
                 WHERE session_id = $1 AND revoked IS NOT TRUE",
                &[&session],
            )
            .await?;
            conn.execute(
                "UPDATE auth.sessions SET not_after = now(), updated_at = now() \
                 WHERE id = $1 AND (not_after IS NULL OR not_after > now())",
                &[&session],
            )
            .await?;
            return Ok(Refreshed::Reused);
        }
        let Some(s) = conn
            .query_opt(
                "SELECT user_id, extract(epoch FROM created_at)::bigint, \
                   not_after IS NOT NULL AND not_after <= now() \
                 FROM auth.sessions WHERE id = $1",
                &[&session],
            )
            .await?
        else {
            return Err(not_found());
        };
        let user_id: Uuid = s.get(0);
        let started: i64 = s.get(1);
        if s.get::<_, bool>(2) {
            return Err(AuthError::bad_request(
                "session_expired",
                "Invalid Refresh Token: Session Expired",
            ));
        }
        let user = users::by_id(&conn, user_id).await?.ok_or_else(not_found)?;
        if user.banned {
            return Err(AuthError::bad_request("user_banned", "User is banned"));
        }
        let (fresh, fresh_hash) = new_refresh_token()?;
        conn.execute(
            "UPDATE auth.refresh_tokens SET revoked = true, updated_at = now() WHERE id = $1",
            &[&token_id],
        )
        .await?;
        users::insert_token(&conn, user_id, session, &fresh_hash, Some(&old_hash)).await?;
        conn.execute(
            "UPDATE auth.sessions SET updated_at = now(), \
               refreshed_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
            &[&session],
        )
        .await?;
        let started = u64::try_from(started).unwrap_or_default();
        Ok(Refreshed::Rotated(session_answer(
            &auth, &user, session, started, &fresh,
        )))
    }
    .await;
    // A reuse commits the revocation, then answers with an error.
    match conn.finish(result).await? {
        Refreshed::Rotated(body) => Ok(Json(body)),
        Refreshed::Reused => Err(AuthError::bad_request(
            "refresh_token_already_used",
            "Invalid Refresh Token: Already Used",
        )),
    }
}

/// The user a bearer token names, with its session (claim `session_id`).
pub struct SignedIn {
    pub user: User,
    pub session: Option<Uuid>,
}

/// GoTrue's `requireAuthentication` + `maybeLoadUserOrSession`: a verified
/// token (401 without one, 403 `bad_jwt` when it does not verify), a user
/// that exists (403 `user_not_found`) and, when the token names one, a
/// session that was not signed out (403 `session_not_found`).
pub async fn signed_in(
    auth: &Auth,
    conn: &Conn,
    headers: &HeaderMap,
) -> Result<SignedIn, AuthError> {
    let authorization = header(headers, "authorization").ok_or_else(AuthError::no_authorization)?;
    let caller = auth
        .keys
        .caller(Some(authorization), None)
        .await
        .map_err(|e| {
            AuthError::bad_jwt(format!(
                "invalid JWT: unable to parse or verify signature, {e}"
            ))
        })?;
    let id = caller
        .user_id()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| AuthError::bad_jwt("invalid claim: missing sub claim"))?;
    let session =
        match caller.claims.get("session_id").and_then(Value::as_str) {
            Some(s) => Some(Uuid::parse_str(s).map_err(|_| {
                AuthError::bad_jwt("invalid claim: session_id claim must be a UUID")
            })?),
            None => None,
        };
    let user = users::by_id(conn, id)
        .await?
        .ok_or_else(users::user_not_found_by_token)?;
    if let Some(session) = session.filter(|s| !s.is_nil()) {
        let live = conn
            .query_opt(
                "SELECT 1 FROM auth.sessions WHERE id = $1 AND user_id = $2 \
                 AND (not_after IS NULL OR not_after > now())",
                &[&session, &id],
            )
            .await?;
        if live.is_none() {
            return Err(AuthError::session_not_found());
        }
    }
    Ok(SignedIn { user, session })
}

/// `GET /user`: the signed-in user.
pub async fn get_user(
    axum::extract::State(auth): State,
    headers: HeaderMap,
) -> Result<Json<Value>, AuthError> {
    let conn = Conn::get(&auth.pool).await?;
    Ok(Json(signed_in(&auth, &conn, &headers).await?.user.json))
}

#[derive(Deserialize)]
pub struct UserUpdate {
    email: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    phone: Option<String>,
}

/// `PUT /user` `{email, password, data}`: `data` is merged into
/// user_metadata (a key set to null is removed); a new password ends the
/// user's other sessions; a new email is confirmed at once (autoconfirm).
pub async fn update_user(
    axum::extract::State(auth): State,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AuthError> {
    let req: UserUpdate = json_body(body)?;
    if req.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(AuthError::bad_request(
            "phone_provider_disabled",
            "Phone changes are not supported",
        ));
    }
    let email = req.email.as_deref().map(users::valid_email).transpose()?;
    let data = users::metadata(req.data, "data")?;
    if let Some(p) = &req.password {
        password::check_strength(p)?;
    }
    let mut conn = Conn::get(&auth.pool).await?;
    let me = signed_in(&auth, &conn, &headers).await?;
    let hash = match req.password {
        Some(p) => Some(password::hash(p).await?),
        None => None,
    };
    conn.begin().await?;
    let result = async {
        let sql = format!(
            "UPDATE auth.users u SET email = coalesce($2, u.email), \
               email_confirmed_at = CASE WHEN $2 IS NOT NULL AND $2 IS DISTINCT FROM u.email \
                 THEN now() ELSE u.email_confirmed_at END, \
               encrypted_password = coalesce($3, u.encrypted_password), \
               raw_user_meta_data = {}, updated_at = now() \
             WHERE u.id = $1 RETURNING {}",
            users::merge_sql("u.raw_user_meta_data", 4),
            users::USER_COLUMNS
        );
        let row = conn
            .query_unique(
                &sql,
                &[&me.user.id, &email, &hash, &data],
                users::email_exists(),
            )
            .await?
            .ok_or_else(users::user_not_found_by_token)?;
        if hash.is_some() {
            users::end_other_sessions(&conn, me.user.id, me.session).await?;
        }
        Ok(User::from_row(&row).json)
    }
    .await;
    conn.finish(result).await.map(Json)
}

/// `POST /logout?scope=global|local|others` → 204. `global` (auth-js's
/// default) ends every session of the user, `local` this one, `others` all
/// but this one.
pub async fn logout(
    axum::extract::State(auth): State,
    query: Params,
    headers: HeaderMap,
) -> Result<Response, AuthError> {
    let scope = param(&query, "scope").unwrap_or_else(|| "global".into());
    let conn = Conn::get(&auth.pool).await?;
    let me = signed_in(&auth, &conn, &headers).await?;
    let id = me.user.id;
    match (scope.as_str(), me.session) {
        ("global", _) => {
            conn.execute("DELETE FROM auth.sessions WHERE user_id = $1", &[&id])
                .await?;
        }
        ("local", Some(s)) => {
            conn.execute(
                "DELETE FROM auth.sessions WHERE id = $1 AND user_id = $2",
                &[&s, &id],
            )
            .await?;
        }
        ("others", keep) => users::end_other_sessions(&conn, id, keep).await?,
        ("local", None) => {}
        _ => return Err(AuthError::validation("Unsupported logout scope")),
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /settings`: what this server offers, in GoTrue's shape.
pub async fn settings() -> Json<Value> {
    Json(json!({
        "external": {
            "anonymous_users": false,
            "email": true,
            "phone": false,
            "apple": false, "azure": false, "bitbucket": false, "discord": false,
            "facebook": false, "figma": false, "fly": false, "github": false,
            "gitlab": false, "google": false, "keycloak": false, "kakao": false,
            "linkedin": false, "linkedin_oidc": false, "notion": false, "saml": false,
            "slack": false, "slack_oidc": false, "spotify": false, "twitch": false,
            "twitter": false, "workos": false, "zoom": false
        },
        "disable_signup": false,
        "mailer_autoconfirm": true,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false
    }))
}

/// `GET /.well-known/jwks.json`: the public key access tokens are signed with,
/// for `auth.getClaims()` and other services to verify them offline; no key
/// when tokens are signed with the shared secret. Clients may cache it for ten
/// minutes, as auth-js does (its JWKS_TTL).
pub async fn jwks(state: State) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=600")],
        Json(state.0.settings.signer.jwks()),
    )
}
