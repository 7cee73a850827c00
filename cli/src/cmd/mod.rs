//! One file per subcommand: its flags (a clap `Args` struct) and its `run`.

pub mod bench;
pub mod completions;
pub mod compress;
pub mod eval;
pub mod inspect;
pub mod mixed;
pub mod quantize;
pub mod run;
pub mod search;
pub mod train;
