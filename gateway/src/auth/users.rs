//! `auth.users` rows as GoTrue's `models.User` serializes them, and the
//! statements that read and write them and their sessions.

use super::db::Conn;
use super::error::AuthError;
use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// A timestamp as Go's `time.Time` marshals it in UTC: RFC 3339, microseconds, `Z`.
macro_rules! ts {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}

/// The columns [`User::from_row`] reads, from a row aliased `u`.
pub const USER_COLUMNS: &str = concat!(
    "u.id, coalesce(u.aud, ''), coalesce(u.role, ''), coalesce(u.email, ''), ",
    "coalesce(u.phone, ''), ",
    ts!("u.email_confirmed_at"),
    ", ",
    ts!("u.confirmed_at"),
    ", ",
    ts!("u.last_sign_in_at"),
    ", ",
    ts!("u.created_at"),
    ", ",
    ts!("u.updated_at"),
    ", ",
    ts!("u.banned_until"),
    ", coalesce(u.raw_app_meta_data, '{}'::jsonb), coalesce(u.raw_user_meta_data, '{}'::jsonb), ",
    "u.is_anonymous, u.encrypted_password, coalesce(u.banned_until > now(), false), ",
    "u.email_confirmed_at IS NOT NULL"
);

/// The app_metadata of a user who signs in with an email and a password.
pub fn email_app_metadata() -> Value {
    json!({"provider": "email", "providers": ["email"]})
}

/// A user as the API shows it, plus what sign-in decides on.
pub struct User {
    pub id: Uuid,
    /// GoTrue's user JSON: `id, aud, role, email, phone, app_metadata,
    /// user_metadata, identities, created_at, updated_at, is_anonymous`, and
    /// when set `email_confirmed_at, confirmed_at, last_sign_in_at, banned_until`.
    pub json: Value,
    pub password_hash: Option<String>,
    pub banned: bool,
    pub email_confirmed: bool,
}

impl User {
    pub fn from_row(row: &tokio_postgres::Row) -> User {
        let id: Uuid = row.get(0);
        let mut m = Map::new();
        m.insert("id".into(), json!(id));
        for (i, key) in [(1, "aud"), (2, "role"), (3, "email"), (4, "phone")] {
            m.insert(key.into(), Value::String(row.get(i)));
        }
        // omitempty in GoTrue: absent when unset.
        for (i, key) in [
            (5, "email_confirmed_at"),
            (6, "confirmed_at"),
            (7, "last_sign_in_at"),
            (10, "banned_until"),
        ] {
            if let Some(t) = row.get::<_, Option<String>>(i) {
                m.insert(key.into(), Value::String(t));
            }
        }
        for (i, key) in [(8, "created_at"), (9, "updated_at")] {
            m.insert(key.into(), json!(row.get::<_, Option<String>>(i)));
        }
        m.insert("app_metadata".into(), row.get(11));
        m.insert("user_metadata".into(), row.get(12));
        m.insert("identities".into(), json!([]));
        m.insert("is_anonymous".into(), Value::Bool(row.get(13)));
        User {
            id,
            json: Value::Object(m),
            password_hash: row.get(14),
            banned: row.get(15),
            email_confirmed: row.get(16),
        }
    }
}

pub fn user_not_found_by_token() -> AuthError {
    AuthError::new(
        StatusCode::FORBIDDEN,
        "user_not_found",
        "User from sub claim in JWT does not exist",
    )
}

pub fn email_exists() -> AuthError {
    AuthError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "email_exists",
        "A user with this email address has already been registered",
    )
}

/// A live (not soft-deleted) user by id.
pub async fn by_id(conn: &Conn, id: Uuid) -> Result<Option<User>, AuthError> {
    let sql =
        format!("SELECT {USER_COLUMNS} FROM auth.users u WHERE u.id = $1 AND u.deleted_at IS NULL");
    Ok(conn
        .query_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(User::from_row))
}

/// A live user by email (stored lower-cased, as GoTrue stores it).
pub async fn by_email(conn: &Conn, email: &str) -> Result<Option<User>, AuthError> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM auth.users u \
         WHERE u.email = $1 AND u.is_sso_user = false AND u.deleted_at IS NULL"
    );
    Ok(conn
        .query_opt(&sql, &[&email])
        .await?
        .as_ref()
        .map(User::from_row))
}

/// What a new user row holds.
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: Option<&'a str>,
    pub confirmed: bool,
    pub signed_in: bool,
    pub role: &'a str,
    pub app_metadata: Value,
    pub user_metadata: Value,
}

/// Inserts a user; an email already taken is `dup`.
pub async fn insert(conn: &Conn, new: &NewUser<'_>, dup: AuthError) -> Result<User, AuthError> {
    let sql = format!(
        "WITH u AS (INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, \
             email_confirmed_at, last_sign_in_at, raw_app_meta_data, raw_user_meta_data, \
             created_at, updated_at, is_sso_user, is_anonymous) \
           VALUES ('00000000-0000-0000-0000-000000000000', $1, 'authenticated', $2, $3, \
             coalesce($4, ''), CASE WHEN $5 THEN now() END, CASE WHEN $6 THEN now() END, \
             $7, $8, now(), now(), false, false) RETURNING *) \
         SELECT {USER_COLUMNS} FROM u"
    );
    let id = Uuid::new_v4();
    let row = conn
        .query_unique(
            &sql,
            &[
                &id,
                &new.role,
                &new.email,
                &new.password_hash,
                &new.confirmed,
                &new.signed_in,
                &new.app_metadata,
                &new.user_metadata,
            ],
            dup,
        )
        .await?;
    row.as_ref()
        .map(User::from_row)
        .ok_or_else(AuthError::internal)
}

/// A new session for `user` with its first refresh token (stored hashed).
/// Returns the session id and its start (epoch seconds, for `amr`).
pub async fn new_session(
    conn: &Conn,
    user: Uuid,
    token_hash: &str,
    user_agent: Option<&str>,
    ip: Option<String>,
) -> Result<(Uuid, u64), AuthError> {
    let id = Uuid::new_v4();
    let row = conn
        .query_one(
            "INSERT INTO auth.sessions (id, user_id, created_at, updated_at, aal, user_agent, ip) \
             VALUES ($1, $2, now(), now(), 'aal1', $3, $4::text::inet) \
             RETURNING extract(epoch FROM created_at)::bigint",
            &[&id, &user, &user_agent, &ip],
        )
        .await?;
    let started: i64 = row.get(0);
    insert_token(conn, user, id, token_hash, None).await?;
    Ok((id, u64::try_from(started).unwrap_or_default()))
}

pub async fn insert_token(
    conn: &Conn,
    user: Uuid,
    session: Uuid,
    token_hash: &str,
    parent: Option<&str>,
) -> Result<(), AuthError> {
    conn.execute(
        "INSERT INTO auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, \
           updated_at, parent, session_id) \
         VALUES ('00000000-0000-0000-0000-000000000000', $1, $2::uuid::text, false, now(), now(), $3, $4)",
        &[&token_hash, &user, &parent, &session],
    )
    .await?;
    Ok(())
}

/// Records a sign-in and returns the user as it now is.
pub async fn touch_sign_in(conn: &Conn, id: Uuid) -> Result<User, AuthError> {
    let sql = format!(
        "UPDATE auth.users u SET last_sign_in_at = now() WHERE u.id = $1 RETURNING {USER_COLUMNS}"
    );
    Ok(User::from_row(&conn.query_one(&sql, &[&id]).await?))
}

/// Ends every session of `user` except `keep` (GoTrue does this when a
/// password changes).
pub async fn end_other_sessions(
    conn: &Conn,
    user: Uuid,
    keep: Option<Uuid>,
) -> Result<(), AuthError> {
    conn.execute(
        "DELETE FROM auth.sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2",
        &[&user, &keep],
    )
    .await?;
    Ok(())
}

/// GoTrue's email check (`validateEmail`): a local part, one `@`, a domain of
/// dot-separated labels of letters, digits and inner hyphens; at most 255
/// characters. Returns the email lower-cased.
pub fn valid_email(email: &str) -> Result<String, AuthError> {
    let invalid = || AuthError::validation("Unable to validate email address: invalid format");
    let email = email.trim();
    if email.is_empty() || email.len() > 255 {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !local_ok || !domain.split('.').all(label_ok) {
        return Err(invalid());
    }
    Ok(email.to_lowercase())
}

/// `raw + update`, with a key set to `null` removed: GoTrue's
/// `UpdateUserMetaData` / `UpdateAppMetaData`, as SQL over parameter `$n`.
pub fn merge_sql(column: &str, param: usize) -> String {
    format!(
        "CASE WHEN ${param}::jsonb IS NULL THEN {column} ELSE \
           (SELECT coalesce(jsonb_object_agg(key, value), '{{}}'::jsonb) \
            FROM jsonb_each(coalesce({column}, '{{}}'::jsonb) || ${param}::jsonb) \
            WHERE value <> 'null'::jsonb) END"
    )
}

/// A metadata object from a request: absent or null is "no change", an object
/// is an update, anything else is refused.
pub fn metadata(value: Option<Value>, field: &str) -> Result<Option<Value>, AuthError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(AuthError::validation(format!(
            "{field} must be a JSON object"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            valid_email(" Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        assert!(valid_email("a+b.c@sub.example.io").is_ok());
        for bad in [
            "", "a", "@b.c", "a@", "a@b..c", "a@-b.c", "a b@c.d", "a@b@c", "a@b_c.d",
        ] {
            assert!(valid_email(bad).is_err(), "{bad}");
        }
    }
}
