//! qplay-core: everything qplay computes, with no dependency on the web platform.
//! Builds natively and for wasm32 (with SIMD128 kernels).

pub mod cost;
pub mod error;
pub mod eval;
pub mod exec;
pub mod graph;
pub mod kernels;
pub mod labels;
pub mod linalg;
pub mod mapview;
pub mod metrics;
pub mod npy;
pub mod onnx;
pub mod passes;
pub mod preprocess;
pub mod quant;
pub mod rng;
pub mod search;
pub mod tensor;
pub mod timing;
pub mod train;

pub use error::{Error, Result};
pub use exec::Executor;
pub use graph::Graph;
pub use onnx::{load_model, Limits, ModelInfo};
pub use tensor::Tensor;
