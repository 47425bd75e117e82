//! Small helpers over pgrx's SPI results.

use pgrx::spi::{SpiError, SpiResult};

/// A single-row query that may find no row: pgrx reports an empty result of
/// `Spi::get_*` as `InvalidPosition`; this turns that into `Ok(None)`.
pub fn optional_row<T>(result: SpiResult<T>) -> SpiResult<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(SpiError::InvalidPosition) => Ok(None),
        Err(e) => Err(e),
    }
}
