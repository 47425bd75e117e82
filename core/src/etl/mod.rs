//! The pure half of ETL: source mappings and the value normalizers they use.

pub mod mapping;
pub mod normalize;
