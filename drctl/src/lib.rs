//! drctl: a disaster-recovery orchestrator and runbook executor.
//!
//! See ARCHITECTURE.md at the repository root for the components, the data
//! flow and a glossary.

pub mod action;
pub mod actions;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod decode;
pub mod diag;
pub mod dns;
pub mod dnsquery;
pub mod drill;
pub mod duration;
pub mod engine;
pub mod environment;
pub mod exit;
pub mod expr;
pub mod immudb;
pub mod journal;
pub mod kube;
pub mod lab;
pub mod measure;
pub mod metrics;
pub mod pgconn;
pub mod postgres;
pub mod registry;
pub mod report;
pub mod runbook;
pub mod schedule;
pub mod secret;
pub mod secretscan;
pub mod store;
pub mod topology;
pub mod yaml;
