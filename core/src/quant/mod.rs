//! Quantization with AIMET's semantics: encodings (pure functions), observers that collect
//! statistics, and the quantization simulation that places quantizers and calibrates them.

pub mod amp;
pub mod analysis;
pub mod bias_correction;
pub mod calib;
pub mod encoding;
pub mod observer;
pub mod sim;

pub use encoding::{Encoding, QuantScheme};
pub use sim::{CalibScheme, Mode, QuantSim, QuantSimConfig, SimState};
