//! `/admin/users` for the service role (GoTrue's `admin.go`): create, list,
//! get, update, delete. The caller is the bearer token, else the `apikey`
//! (an `sb_secret_…` key); anything but `service_role` is 403 `not_admin`.

use super::db::Conn;
use super::error::AuthError;
use super::users::{self, NewUser, User};
use super::{header, json_body, password, Auth, State};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// GoTrue's `requireAdmin`.
async fn require_admin(auth: &Auth, headers: &HeaderMap) -> Result<(), AuthError> {
    let authorization = header(headers, "authorization");
    let apikey = header(headers, "apikey");
    if authorization.is_none() && apikey.is_none() {
        return Err(AuthError::no_authorization());
    }
    let caller = auth.keys.caller(authorization, apikey).await.map_err(|e| {
        AuthError::bad_jwt(format!(
            "invalid JWT: unable to parse or verify signature, {e}"
        ))
    })?;
    if caller.role != "service_role" {
        return Err(AuthError::not_admin());
    }
    Ok(())
}

fn user_id(id: &str) -> Result<Uuid, AuthError> {
    Uuid::parse_str(id).map_err(|_| AuthError::validation("user_id must be an UUID"))
}

/// GoTrue lets an admin set the role; Spine's keys accept only Supabase's
/// roles, so only those can be given.
fn role(role: Option<String>) -> Result<Option<String>, AuthError> {
    match role {
        None => Ok(None),
        Some(r) if spine_core::auth::ROLES.contains(&r.as_str()) => Ok(Some(r)),
        Some(_) => Err(AuthError::validation(
            "role must be anon, authenticated or service_role",
        )),
    }
}

/// A Go duration as GoTrue's `ban_duration` takes it ("24h", "1h30m", "90s",
/// "500ms"), in seconds; "none" lifts a ban (`Some(None)`).
fn ban_duration(s: Option<&str>) -> Result<Option<Option<f64>>, AuthError> {
    let Some(s) = s else { return Ok(None) };
    if s == "none" {
        return Ok(Some(None));
    }
    let bad = || AuthError::validation("invalid format for ban duration");
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return Err(bad());
        };
        total += value * unit;
        rest = &rest[len..];
    }
    Ok(Some(Some(total)))
}

#[derive(Deserialize)]
pub struct AdminUser {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    #[serde(default)]
    email_confirm: bool,
    user_metadata: Option<Value>,
    app_metadata: Option<Value>,
    role: Option<String>,
    ban_duration: Option<String>,
}

/// `POST /admin/users` → the user (200). No session is started.
pub async fn create(
    axum::extract::State(auth): State,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AuthError> {
    require_admin(&auth, &headers).await?;
    let req: AdminUser = json_body(body)?;
    if req.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(AuthError::bad_request(
            "phone_provider_disabled",
            "Phone users are not supported",
        ));
    }
    let email = users::valid_email(req.email.as_deref().unwrap_or_default())?;
    let role = role(req.role)?.unwrap_or_else(|| "authenticated".into());
    let user_metadata = users::metadata(req.user_metadata, "user_metadata")?;
    let mut app_metadata = users::email_app_metadata();
    if let Some(Value::Object(extra)) = users::metadata(req.app_metadata, "app_metadata")? {
        if let Some(m) = app_metadata.as_object_mut() {
            m.extend(extra.into_iter().filter(|(_, v)| !v.is_null()));
        }
    }
    let ban = ban_duration(req.ban_duration.as_deref())?;
    let hash = match req.password {
        Some(p) => {
            password::check_strength(&p)?;
            Some(password::hash(p).await?)
        }
        None => None,
    };
    let mut conn = Conn::get(&auth.pool).await?;
    conn.begin().await?;
    let result = async {
        let user = users::insert(
            &conn,
            &NewUser {
                email: &email,
                password_hash: hash.as_deref(),
                confirmed: req.email_confirm,
                signed_in: false,
                role: &role,
                app_metadata,
                user_metadata: user_metadata.unwrap_or_else(|| json!({})),
            },
            users::email_exists(),
        )
        .await?;
        match ban {
            Some(secs) => Ok(set_ban(&conn, user.id, secs).await?.json),
            None => Ok(user.json),
        }
    }
    .await;
    conn.finish(result).await.map(Json)
}

async fn set_ban(conn: &Conn, id: Uuid, secs: Option<f64>) -> Result<User, AuthError> {
    let sql = format!(
        "UPDATE auth.users u SET banned_until = now() + make_interval(secs => $2), \
           updated_at = now() WHERE u.id = $1 RETURNING {}",
        users::USER_COLUMNS
    );
    Ok(User::from_row(&conn.query_one(&sql, &[&id, &secs]).await?))
}

/// `GET /admin/users?page=1&per_page=50` → `{users, aud}`, newest first, with
/// `X-Total-Count` and a `Link` header (auth-js reads both for pagination).
pub async fn list(
    axum::extract::State(auth): State,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, AuthError> {
    require_admin(&auth, &headers).await?;
    let q = query.map(|q| q.0).unwrap_or_default();
    let number = |name: &str, default: i64| -> Result<i64, AuthError> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| AuthError::validation("Bad Pagination Parameters")),
        }
    };
    let page = number("page", 1)?;
    let per_page = number("per_page", 50)?.min(1000);
    let conn = Conn::get(&auth.pool).await?;
    let total: i64 = conn
        .query_one(
            "SELECT count(*) FROM auth.users WHERE deleted_at IS NULL",
            &[],
        )
        .await?
        .get(0);
    let sql = format!(
        "SELECT {} FROM auth.users u WHERE u.deleted_at IS NULL \
         ORDER BY u.created_at DESC, u.id LIMIT $1 OFFSET $2",
        users::USER_COLUMNS
    );
    let offset = (page - 1).saturating_mul(per_page);
    let rows = conn.query(&sql, &[&per_page, &offset]).await?;
    let list: Vec<Value> = rows.iter().map(|r| User::from_row(r).json).collect();
    let mut response = Json(json!({"users": list, "aud": "authenticated"})).into_response();
    let h = response.headers_mut();
    h.insert("x-total-count", HeaderValue::from(total));
    let last = ((total + per_page - 1) / per_page).max(1);
    let mut links = Vec::new();
    if page < last {
        links.push(format!(
            "</admin/users?page={}&per_page={per_page}>; rel=\"next\"",
            page + 1
        ));
    }
    links.push(format!(
        "</admin/users?page={last}&per_page={per_page}>; rel=\"last\""
    ));
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        h.insert("link", v);
    }
    Ok(response)
}

/// `GET /admin/users/{id}`.
pub async fn get(
    axum::extract::State(auth): State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AuthError> {
    require_admin(&auth, &headers).await?;
    let id = user_id(&id)?;
    let conn = Conn::get(&auth.pool).await?;
    let user = users::by_id(&conn, id)
        .await?
        .ok_or_else(AuthError::user_not_found)?;
    Ok(Json(user.json))
}

/// `PUT /admin/users/{id}` `{email, password, email_confirm, user_metadata,
/// app_metadata, role, ban_duration}`: metadata is merged (null removes a
/// key); a new password ends every session of the user.
pub async fn update(
    axum::extract::State(auth): State,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AuthError> {
    require_admin(&auth, &headers).await?;
    let id = user_id(&id)?;
    let req: AdminUser = json_body(body)?;
    if req.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(AuthError::bad_request(
            "phone_provider_disabled",
            "Phone users are not supported",
        ));
    }
    let email = req.email.as_deref().map(users::valid_email).transpose()?;
    let role = role(req.role)?;
    let user_metadata = users::metadata(req.user_metadata, "user_metadata")?;
    let app_metadata = users::metadata(req.app_metadata, "app_metadata")?;
    let ban = ban_duration(req.ban_duration.as_deref())?;
    let hash = match req.password {
        Some(p) => {
            password::check_strength(&p)?;
            Some(password::hash(p).await?)
        }
        None => None,
    };
    let mut conn = Conn::get(&auth.pool).await?;
    conn.begin().await?;
    let result = async {
        let sql = format!(
            "UPDATE auth.users u SET email = coalesce($2, u.email), \
               encrypted_password = coalesce($3, u.encrypted_password), \
               email_confirmed_at = CASE WHEN $4 THEN coalesce(u.email_confirmed_at, now()) \
                 ELSE u.email_confirmed_at END, \
               role = coalesce($5, u.role), \
               raw_user_meta_data = {}, raw_app_meta_data = {}, updated_at = now() \
             WHERE u.id = $1 AND u.deleted_at IS NULL RETURNING {}",
            users::merge_sql("u.raw_user_meta_data", 6),
            users::merge_sql("u.raw_app_meta_data", 7),
            users::USER_COLUMNS
        );
        let row = conn
            .query_unique(
                &sql,
                &[
                    &id,
                    &email,
                    &hash,
                    &req.email_confirm,
                    &role,
                    &user_metadata,
                    &app_metadata,
                ],
                users::email_exists(),
            )
            .await?
            .ok_or_else(AuthError::user_not_found)?;
        if hash.is_some() {
            users::end_other_sessions(&conn, id, None).await?;
        }
        match ban {
            Some(secs) => Ok(set_ban(&conn, id, secs).await?.json),
            None => Ok(User::from_row(&row).json),
        }
    }
    .await;
    conn.finish(result).await.map(Json)
}

#[derive(Deserialize, Default)]
pub struct Delete {
    #[serde(default)]
    should_soft_delete: bool,
}

/// `DELETE /admin/users/{id}` `{should_soft_delete}` → `{}` (200). A hard
/// delete removes the row, its sessions and tokens; a soft delete keeps the
/// row with `deleted_at` set and its email, phone and password cleared.
pub async fn delete(
    axum::extract::State(auth): State,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AuthError> {
    require_admin(&auth, &headers).await?;
    let id = user_id(&id)?;
    // auth-js sends `{should_soft_delete}`; an empty body is a hard delete.
    let req: Delete = match &body {
        Ok(b) if b.is_empty() => Delete::default(),
        _ => json_body(body)?,
    };
    let mut conn = Conn::get(&auth.pool).await?;
    conn.begin().await?;
    let result = async {
        let n = if req.should_soft_delete {
            conn.execute("DELETE FROM auth.sessions WHERE user_id = $1", &[&id])
                .await?;
            conn.execute(
                "UPDATE auth.users SET deleted_at = now(), updated_at = now(), email = NULL, \
                   phone = NULL, encrypted_password = '', raw_user_meta_data = '{}'::jsonb \
                 WHERE id = $1 AND deleted_at IS NULL",
                &[&id],
            )
            .await?
        } else {
            conn.execute("DELETE FROM auth.users WHERE id = $1", &[&id])
                .await?
        };
        if n == 0 {
            return Err(AuthError::user_not_found());
        }
        Ok(())
    }
    .await;
    conn.finish(result).await?;
    Ok((StatusCode::OK, Json(json!({}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(ban_duration(None).unwrap(), None);
        assert_eq!(ban_duration(Some("none")).unwrap(), Some(None));
        assert_eq!(ban_duration(Some("24h")).unwrap(), Some(Some(86400.0)));
        assert_eq!(ban_duration(Some("1h30m")).unwrap(), Some(Some(5400.0)));
        assert_eq!(ban_duration(Some("500ms")).unwrap(), Some(Some(0.5)));
        for bad in ["", "10", "1d", "h", "1h-"] {
            assert!(ban_duration(Some(bad)).is_err(), "{bad}");
        }
    }
}
