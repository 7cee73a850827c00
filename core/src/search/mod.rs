//! Searches over per-layer choices, each scoring candidates through [`crate::eval::Evaluator`].

pub mod compress;
pub mod greedy_ratio;
