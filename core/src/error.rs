//! The one error type of qplay-core. Every variant says where things went wrong
//! (node, op type, tensor, byte offset) and renders as a single line a UI can show as is.

use thiserror::Error;

/// Errors from loading, validating or running a model.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    #[error("the file is empty")]
    EmptyFile,
    #[error("the file is {size} bytes, over the limit of {limit} bytes")]
    FileTooLarge { size: usize, limit: usize },
    #[error("not an ONNX model: protobuf decoding failed {0}")]
    Decode(String),
    #[error("not an ONNX model: this file looks like {0}")]
    WrongFormat(&'static str),
    #[error("the model has no graph")]
    NoGraph,
    #[error("opset {version} of the default domain is not supported (qplay supports opsets 7 to 21)")]
    UnsupportedOpset { version: i64 },
    #[error("the model imports no opset of the default ONNX domain")]
    NoOpset,
    #[error("tensor '{tensor}': {msg}")]
    Tensor { tensor: String, msg: String },
    #[error("node '{node}' ({op}): {msg}")]
    Node { node: String, op: String, msg: String },
    #[error("node '{node}': op type '{op}' is not supported")]
    UnsupportedOp { node: String, op: String },
    #[error("graph: {0}")]
    Graph(String),
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
    #[error("limit exceeded: {0}")]
    Limit(String),
    #[error("npy: {0}")]
    Npy(String),
    #[error("image: {0}")]
    Image(String),
    #[error("preprocessing description: {0}")]
    Preprocess(String),
    #[error("quantization: {0}")]
    Quant(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn node(node: &str, op: &str, msg: impl Into<String>) -> Self {
        Error::Node { node: node.to_string(), op: op.to_string(), msg: msg.into() }
    }
    pub(crate) fn tensor(tensor: &str, msg: impl Into<String>) -> Self {
        Error::Tensor { tensor: tensor.to_string(), msg: msg.into() }
    }
}
