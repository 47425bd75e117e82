//! Who is calling: facts about the role a request acts as, for the checks that
//! SECURITY DEFINER functions make (inside them `current_user` is the owner).

use crate::error::SpineError;
use pgrx::prelude::*;
use pgrx::Uuid;
use std::cell::RefCell;
use std::ffi::CStr;

/// The user a request acts for: what `auth.uid()` returns — setting
/// `request.jwt.claim.sub`, else claim `sub` of `request.jwt.claims` (as PostgREST
/// sets them) — or None for system callers. A `sub` that is not a uuid, or claims
/// that are not JSON, are 22023.
///
/// Read here rather than through `SELECT auth.uid()`: every enqueue, emit and
/// ingest asks, and a statement costs more than the rest of a small enqueue. The
/// claims of the last request are parsed once. This is the definition in
/// `supabase/compat.sql` and Supabase's; a database whose `auth.uid()` reads
/// something else would see RLS and Spine disagree. One difference: claims that
/// jsonb reads but serde does not (numbers beyond a double, nesting over 128) are
/// refused here.
pub fn request_user() -> Result<Option<Uuid>, SpineError> {
    if let Some(sub) = setting(c"request.jwt.claim.sub").filter(|s| !s.is_empty()) {
        return parse_sub(&sub).map(Some);
    }
    let Some(claims) = setting(c"request.jwt.claims").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Some(user) = LAST_CLAIMS.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|(text, _)| *text == claims)
            .map(|(_, user)| *user)
    }) {
        return Ok(user);
    }
    let user = user_of_claims(&claims)?;
    LAST_CLAIMS.with(|l| *l.borrow_mut() = Some((claims, user)));
    Ok(user)
}

thread_local! {
    /// The last claims text seen and the user it names.
    static LAST_CLAIMS: RefCell<Option<(String, Option<Uuid>)>> = const { RefCell::new(None) };
}

/// The current value of a (possibly custom) setting; None when it is not set.
fn setting(name: &CStr) -> Option<String> {
    // SAFETY: GetConfigOption with missing_ok returns NULL or a pointer to the
    // setting's current value, valid until the setting changes; copied at once.
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
    }
}

fn user_of_claims(claims: &str) -> Result<Option<Uuid>, SpineError> {
    let invalid = |reason: String| SpineError::InvalidParameter {
        name: "request.jwt.claims",
        reason,
    };
    let parsed: serde_json::Value =
        serde_json::from_str(claims).map_err(|e| invalid(format!("not JSON ({e})")))?;
    match parsed.get("sub") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(sub)) => parse_sub(sub).map(Some),
        Some(other) => parse_sub(&other.to_string()).map(Some),
    }
}

fn parse_sub(sub: &str) -> Result<Uuid, SpineError> {
    pg_uuid(sub)
        .map(Uuid::from_bytes)
        .ok_or_else(|| SpineError::InvalidParameter {
            name: "request.jwt.claims",
            reason: format!("claim \"sub\" is not a uuid (\"{sub}\")"),
        })
}

/// A uuid the way PostgreSQL's `uuid` input reads it (what `auth.uid()` casts
/// with): 32 hex digits, optionally in braces, a hyphen allowed after any group of
/// four digits except the last.
pub fn pg_uuid(text: &str) -> Option<[u8; 16]> {
    let mut rest = text.as_bytes();
    let braces = rest.first() == Some(&b'{');
    if braces {
        rest = &rest[1..];
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let (&[hi, lo], tail) = rest.split_first_chunk::<2>()?;
        *byte = hex(hi)? << 4 | hex(lo)?;
        rest = tail;
        if i % 2 == 1 && i < 15 && rest.first() == Some(&b'-') {
            rest = &rest[1..];
        }
    }
    if braces {
        rest = rest.strip_prefix(b"}")?;
    }
    rest.is_empty().then_some(out)
}

#[cfg(test)]
mod uuid_tests {
    use super::pg_uuid;

    /// The forms PostgreSQL's uuid input accepts, and some it refuses.
    #[test]
    fn reads_uuids_as_postgres_does() {
        let want = Some([
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ]);
        for ok in [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
        ] {
            assert_eq!(pg_uuid(ok), want, "{ok}");
        }
        for bad in [
            "",
            "alice",
            "urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
        ] {
            assert_eq!(pg_uuid(bad), None, "{bad}");
        }
    }
}

/// True when the caller acts as a superuser or a BYPASSRLS role (service_role).
/// "Acts as" is the outer user: the role set with SET ROLE (PostgREST does this per
/// request), or the login role — not the owner of the SECURITY DEFINER function
/// that asks. Reads the role cache, so it costs microseconds on every enqueue.
#[pg_extern(stable, parallel_safe)]
pub fn caller_is_privileged() -> bool {
    // SAFETY: these read the backend's current role and its cached attributes; they
    // are valid in any transaction, which a SQL-callable function always runs in.
    unsafe {
        let role = pg_sys::GetOuterUserId();
        pg_sys::superuser_arg(role) || pg_sys::has_bypassrls_privilege(role)
    }
}

/// 42501 unless the caller is privileged (service_role or a superuser); `what`
/// completes "only service_role may …" in the error.
/// Whether the request acts as service_role without a user: a privileged role, or
/// claims whose `role` is `service_role` (what the function host sets for a system
/// job; only roles that may call Spine's policy functions reach them with it).
pub fn acts_as_system() -> Result<bool, SpineError> {
    if request_user()?.is_some() {
        return Ok(false);
    }
    if caller_is_privileged() {
        return Ok(true);
    }
    let role = setting(c"request.jwt.claims")
        .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
        .and_then(|c| c.get("role").and_then(|r| r.as_str()).map(String::from));
    Ok(role.as_deref() == Some("service_role"))
}

pub fn require_privileged(what: &str) -> Result<(), SpineError> {
    if caller_is_privileged() {
        Ok(())
    } else {
        Err(SpineError::PermissionDenied(format!(
            "only service_role may {what}"
        )))
    }
}

/// The user a call acts for: `owner` when given (only the user themself or a
/// privileged caller may name one), else the request's user. `what` names the
/// things that belong to users, for the error (`rules`, `entities`, `consents`).
pub fn acting_owner(owner: Option<Uuid>, what: &str) -> Result<Uuid, SpineError> {
    match (owner, request_user()?) {
        (Some(o), me) if me == Some(o) || caller_is_privileged() => Ok(o),
        (Some(_), _) => Err(SpineError::PermissionDenied(format!(
            "only service_role may manage another user's {what}"
        ))),
        (None, Some(me)) => Ok(me),
        (None, None) => Err(SpineError::PermissionDenied(format!(
            "{what} belong to a user: set request.jwt.claims (sub) or pass owner"
        ))),
    }
}

/// The name of the role the request acts as (see [`caller_is_privileged`]), for
/// the audit log: `authenticated`, `service_role`, or a login role.
pub fn outer_role_name() -> String {
    // SAFETY: as above; GetUserNameFromId with noerr returns NULL for a dropped role
    // and otherwise a palloc'd C string that lives until the memory context resets.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), true);
        if name.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The test runs as a superuser; as authenticated it is not privileged, as
    /// service_role it is (BYPASSRLS), also inside a SECURITY DEFINER function.
    #[pg_test]
    fn privilege_follows_the_role_acted_as() {
        assert_eq!(
            Spi::get_one::<bool>("SELECT spine.caller_is_privileged()").unwrap(),
            Some(true)
        );
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        assert_eq!(
            Spi::get_one::<bool>("SELECT spine.caller_is_privileged()").unwrap(),
            Some(false)
        );
        Spi::run("RESET ROLE").unwrap();
        Spi::run("SET LOCAL ROLE service_role").unwrap();
        assert_eq!(
            Spi::get_one::<bool>("SELECT spine.caller_is_privileged()").unwrap(),
            Some(true)
        );
    }

    /// request_user() reads the settings the way auth.uid() does: the same user
    /// for each way a request can name one, and none without.
    #[pg_test]
    fn request_user_agrees_with_auth_uid() {
        let alice = "6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11";
        let bob = "0b7e8f7c-2f4e-4d59-8a40-3f3c8f1e2a77";
        let cases = [
            ("", ""),
            (
                &*format!(r#"{{"sub":"{alice}","role":"authenticated"}}"#),
                "",
            ),
            (r#"{"role":"anon"}"#, ""),
            (r#"{"sub":null}"#, ""),
            (&*format!(r#"{{"sub":"{alice}"}}"#), bob),
            ("", bob),
        ];
        for (claims, sub) in cases {
            Spi::run_with_args(
                "SELECT set_config('request.jwt.claims', $1, true), \
                        set_config('request.jwt.claim.sub', $2, true)",
                &[claims.into(), sub.into()],
            )
            .unwrap();
            let expected = Spi::get_one::<pgrx::Uuid>("SELECT auth.uid()").unwrap();
            assert_eq!(
                super::request_user().unwrap(),
                expected,
                "claims {claims:?}, claim.sub {sub:?}"
            );
        }
    }

    /// Claims whose sub is not a uuid, or that are not JSON, are 22023.
    #[pg_test]
    fn request_user_refuses_bad_claims() {
        for claims in [r#"{"sub":"alice"}"#, "{not json", r#"{"sub":42}"#] {
            Spi::run_with_args(
                "SELECT set_config('request.jwt.claims', $1, true)",
                &[claims.into()],
            )
            .unwrap();
            let err = super::request_user().expect_err(claims);
            assert!(
                err.to_string().contains("request.jwt.claims"),
                "{claims}: {err}"
            );
        }
    }
}
