//! Small helpers over SPI: optional rows, statements prepared once per backend,
//! and writes that return a row.
//!
//! Every helper here runs its statement to the end (no row limit). A row limit
//! ends an `INSERT/UPDATE/DELETE … RETURNING` at its first row, before the
//! table's AFTER STATEMENT triggers fire: pgrx's `Spi::get_one_with_args` passes
//! a limit of 1, so a write through it skips users' statement triggers (and their
//! transition tables) and Spine's own cache invalidation triggers. Writes that
//! return a value use [`returning_one`] or [`returning_two`] instead.
//!
//! `Spi::run_with_args` parses and plans its SQL on every call, which costs more
//! than the statement itself on Spine's hot paths (every emit, every audited
//! decision, every rule firing). [`run_prepared`] and [`one_prepared`] keep the
//! plan (SPI_keepplan) per backend, keyed by the SQL text; PostgreSQL re-plans
//! a kept plan by itself when a table it uses changes.

use pgrx::datum::{DatumWithOid, FromDatum, IntoDatum};
use pgrx::pg_sys::{BuiltinOid, PgOid};
use pgrx::spi::{OwnedPreparedStatement, Spi, SpiError, SpiResult};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A single-row query that may find no row: pgrx reports an empty result of
/// `Spi::get_*` as `InvalidPosition`; this turns that into `Ok(None)`.
pub fn optional_row<T>(result: SpiResult<T>) -> SpiResult<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(SpiError::InvalidPosition) => Ok(None),
        Err(e) => Err(e),
    }
}

/// True under REPEATABLE READ or SERIALIZABLE: every statement of the transaction
/// reads with its first snapshot, so what it reads may predate changes other
/// sessions committed since (caches must not keep it; a conflict shows up as a
/// serialization failure rather than as a row).
pub fn snapshot_per_transaction() -> bool {
    // SAFETY: reads the backend's isolation level, valid in any transaction.
    unsafe { pgrx::pg_sys::XactIsoLevel >= pgrx::pg_sys::XACT_REPEATABLE_READ as i32 }
}

// Plans kept for the life of the backend (a backend is one thread).
thread_local! {
    static PLANS: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> =
        RefCell::new(HashMap::new());
}

fn plan(sql: &'static str, types: &[BuiltinOid]) -> SpiResult<Rc<OwnedPreparedStatement>> {
    if let Some(found) = PLANS.with(|p| p.borrow().get(sql).cloned()) {
        return Ok(found);
    }
    let oids: Vec<PgOid> = types.iter().map(|t| PgOid::BuiltIn(*t)).collect();
    let kept = Rc::new(Spi::connect(|client| {
        client.prepare_mut(sql, &oids).map(|p| p.keep())
    })?);
    PLANS.with(|p| p.borrow_mut().insert(sql, kept.clone()));
    Ok(kept)
}

/// Runs a statement whose plan is kept; `types` are its parameters' types.
pub fn run_prepared(
    sql: &'static str,
    types: &[BuiltinOid],
    args: &[DatumWithOid<'_>],
) -> SpiResult<()> {
    let stmt = plan(sql, types)?;
    Spi::connect_mut(|client| client.update(&*stmt, None, args).map(|_| ()))
}

/// The first column of the first row of a statement whose plan is kept; None when
/// there is no row or the value is NULL. The statement runs to its end (see the
/// module's note): callers write statements that return at most one row.
pub fn one_prepared<T: FromDatum + IntoDatum>(
    sql: &'static str,
    types: &[BuiltinOid],
    args: &[DatumWithOid<'_>],
) -> SpiResult<Option<T>> {
    let stmt = plan(sql, types)?;
    Spi::connect_mut(|client| {
        let table = client.update(&*stmt, None, args)?;
        if table.is_empty() {
            Ok(None)
        } else {
            table.first().get_one::<T>()
        }
    })
}

/// The first column of the first row a write returns (`… RETURNING x`), with the
/// statement run to its end so its AFTER STATEMENT triggers fire. Like pgrx's
/// `Spi::get_one_with_args`, no row is `Err(InvalidPosition)` (see [`optional_row`]).
pub fn returning_one<T: FromDatum + IntoDatum>(
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> SpiResult<Option<T>> {
    Spi::connect_mut(|client| client.update(sql, None, args)?.first().get_one::<T>())
}

/// [`returning_one`] for two columns.
pub fn returning_two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> SpiResult<(Option<A>, Option<B>)> {
    Spi::connect_mut(|client| client.update(sql, None, args)?.first().get_two::<A, B>())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Writes through Spine's functions fire the tables' AFTER STATEMENT triggers:
    /// a user's (here one that notes each statement) as well as Spine's own cache
    /// invalidation. Each call below writes one row and returns a value from it,
    /// the shape a row limit used to stop before the trigger.
    #[pg_test]
    fn writes_fire_statement_triggers() {
        Spi::run(
            "SELECT set_config('request.jwt.claims', \
               '{\"sub\":\"6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11\"}', true); \
             CREATE TABLE public.fired (tbl text, op text); \
             CREATE FUNCTION public.note_statement() RETURNS trigger LANGUAGE plpgsql AS \
               'BEGIN INSERT INTO public.fired VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END'; \
             CREATE TRIGGER note AFTER INSERT OR UPDATE OR DELETE ON spine.entities \
               FOR EACH STATEMENT EXECUTE FUNCTION public.note_statement(); \
             CREATE TRIGGER note AFTER INSERT OR UPDATE OR DELETE ON spine.rules \
               FOR EACH STATEMENT EXECUTE FUNCTION public.note_statement();",
        )
        .unwrap();
        let entity = Spi::get_one::<pgrx::Uuid>(
            "SELECT spine.upsert_entity('person', '{\"name\":\"Ada\"}')",
        )
        .unwrap()
        .unwrap();
        Spi::run_with_args("SELECT spine.delete_entity($1)", &[entity.into()]).unwrap();
        Spi::run(
            "SELECT spine.save_rule('noted', 'test.Noted', 'true', \
               '[{\"emit\": {\"type\": \"test.Echoed\"}}]')",
        )
        .unwrap();
        Spi::run("SELECT spine.delete_rule('noted')").unwrap();
        let fired = Spi::get_one::<String>(
            "SELECT string_agg(tbl || ' ' || op, ', ' ORDER BY ctid) FROM public.fired",
        )
        .unwrap();
        assert_eq!(
            fired.as_deref(),
            // INSERT … ON CONFLICT DO UPDATE fires the UPDATE statement trigger too.
            Some("entities INSERT, entities DELETE, rules UPDATE, rules INSERT, rules DELETE")
        );
    }
}
