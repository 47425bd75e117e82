//! Who is calling: facts about the role a request acts as, for the checks that
//! SECURITY DEFINER functions make (inside them `current_user` is the owner).

use crate::error::SpineError;
use crate::spi_ext::one_prepared;
use pgrx::prelude::*;
use pgrx::Uuid;

/// The user a request acts for: `auth.uid()`, i.e. claim `sub` of the request's
/// JWT claims (as PostgREST sets them), or None for system callers. A `sub` that
/// is not a uuid is 22023.
pub fn request_user() -> Result<Option<Uuid>, SpineError> {
    one_prepared::<Uuid>("SELECT auth.uid()", &[], &[]).map_err(|e| SpineError::InvalidParameter {
        name: "request.jwt.claims",
        reason: format!("claim \"sub\" is not a uuid ({e})"),
    })
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
}
