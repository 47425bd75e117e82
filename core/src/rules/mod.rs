//! The pure half of rules: the JsonLogic evaluator and action templates.

pub mod jsonlogic;
pub mod template;
