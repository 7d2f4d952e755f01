//! Shared helpers for drctl integration tests.
