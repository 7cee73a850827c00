//! ONNX protobuf -> [`crate::graph::Graph`]: decoding with prost, limits checked before
//! allocating, tensor conversion and graph validation.

#[allow(clippy::all, missing_docs)]
pub mod proto;
pub mod attr;
pub mod export;
mod load;
mod tensor;

pub use load::{load_model, FileNode, Limits, ModelInfo};
pub(crate) use tensor::tensor_from_proto;
