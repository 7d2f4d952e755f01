//! The generic action kinds: waiting, human approval, HTTP checks, running
//! a program, notifications and check sets. They know nothing of DNS,
//! Kubernetes or databases; those kinds live in their domain modules. All
//! of them implement [`crate::action::Action`].

pub mod approval;
pub mod checks;
pub mod exec;
pub mod http_check;
pub mod notify;
pub mod wait;
