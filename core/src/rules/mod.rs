//! The pure half of rules: the JsonLogic evaluator, equality guards that index
//! rules by the values they test, and action templates.

pub mod guard;
pub mod jsonlogic;
pub mod template;
