//! Searches: over per-layer choices, each scoring candidates through [`crate::eval::Evaluator`]
//! (compression), and multi-objective evolutionary search ([`nsga2`]).

pub mod compress;
pub mod donna;
pub mod greedy_ratio;
pub mod nsga2;
pub mod predictor;
