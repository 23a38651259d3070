//! Helpers for weft end-to-end tests.
