//! Building ONNX attributes for nodes that qplay creates (written back on export).

use super::proto::{attribute_proto::AttributeType, AttributeProto};

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), i: Some(v), r#type: Some(AttributeType::Int as i32), ..Default::default() }
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), ints: v.to_vec(), r#type: Some(AttributeType::Ints as i32), ..Default::default() }
}

pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), f: Some(v), r#type: Some(AttributeType::Float as i32), ..Default::default() }
}
