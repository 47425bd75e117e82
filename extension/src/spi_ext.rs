//! Small helpers over SPI: optional rows, and statements prepared once per backend.
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
/// there is no row or the value is NULL.
pub fn one_prepared<T: FromDatum + IntoDatum>(
    sql: &'static str,
    types: &[BuiltinOid],
    args: &[DatumWithOid<'_>],
) -> SpiResult<Option<T>> {
    let stmt = plan(sql, types)?;
    Spi::connect_mut(|client| {
        let table = client.update(&*stmt, Some(1), args)?;
        if table.is_empty() {
            Ok(None)
        } else {
            table.first().get_one::<T>()
        }
    })
}
