//! Graph transformations, one file per pass; each is `Graph -> (Graph, Report)`.

pub mod bn_fold;
pub mod svd;
pub mod cle;
pub mod cle_select;
pub mod prune;
pub mod adaround;
