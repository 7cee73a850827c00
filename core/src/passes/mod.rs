//! Graph transformations, one file per pass; each is `Graph -> (Graph, Report)`.

pub mod bn_fold;
pub mod cle;
pub mod adaround;
