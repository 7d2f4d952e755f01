//! The runbook language: what a runbook is, how it is read, and how it is
//! checked before anything runs.
//!
//! - [`model`]: the types (also the source of `drctl schema`).
//! - [`parse`]: located YAML -> model, collecting every problem.
//! - [`params`]: parameter declarations, their types, and checking values.
//! - [`validate`]: whole-runbook checks: duplicate ids, unknown `needs`,
//!   cycles, references, and each action's own parameter validation.

pub mod model;
pub mod params;
pub mod parse;
pub mod validate;

pub use model::*;
pub use parse::load_runbook;
pub use validate::{validate_runbook, validate_runbook_for, Direction, ExecutionPlan};
