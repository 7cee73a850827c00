//! TensorProto -> Tensor, refusing what qplay does not support before allocating.

use super::proto::{tensor_proto::DataType, TensorProto};
use super::Limits;
use crate::error::{Error, Result};
use crate::tensor::{checked_numel, Tensor};

/// Converts an initializer or Constant value. `budget` is the remaining byte budget of the model
/// and is decreased by the tensor's size.
pub(crate) fn tensor_from_proto(t: &TensorProto, limits: &Limits, budget: &mut usize) -> Result<Tensor> {
    let name = if t.name().is_empty() { "<unnamed>" } else { t.name() };
    let err = |msg: String| Error::tensor(name, msg);
    if t.data_location() == super::proto::tensor_proto::DataLocation::External || !t.external_data.is_empty() {
        return Err(err("uses external data (a separate file); qplay only loads self-contained models".into()));
    }
    if t.segment.is_some() {
        return Err(err("is segmented; segmented tensors are not supported".into()));
    }
    if t.dims.len() > limits.max_rank {
        return Err(err(format!("has rank {}, over the limit of {}", t.dims.len(), limits.max_rank)));
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(err(format!("has a negative dimension {d}")));
        }
        shape.push(usize::try_from(d).map_err(|_| err(format!("dimension {d} is too large")))?);
    }
    let numel = checked_numel(&shape)
        .filter(|&n| n <= limits.max_tensor_elements)
        .ok_or_else(|| err(format!("dims {:?} exceed the limit of {} elements", t.dims, limits.max_tensor_elements)))?;
    let dt = DataType::try_from(t.data_type()).unwrap_or(DataType::Undefined);
    let elem_bytes = match dt {
        DataType::Float | DataType::Int32 => 4,
        DataType::Int64 => 8,
        other => {
            return Err(err(format!(
                "has data type {} which qplay does not load (float32 weights, int64/int32 shape tensors only)",
                other.as_str_name()
            )))
        }
    };
    let bytes = numel * elem_bytes;
    if bytes > *budget {
        return Err(Error::Limit(format!(
            "tensor '{name}' ({bytes} bytes) brings the model's initializers over the limit of {} bytes",
            limits.max_total_bytes
        )));
    }
    *budget -= bytes;
    let raw = t.raw_data();
    let has_raw = t.raw_data.is_some();
    let typed_len = match dt {
        DataType::Float => t.float_data.len(),
        DataType::Int32 => t.int32_data.len(),
        _ => t.int64_data.len(),
    };
    if has_raw {
        if raw.len() != bytes {
            return Err(err(format!(
                "raw_data has {} bytes but dims {:?} of {} need {} bytes",
                raw.len(),
                t.dims,
                dt.as_str_name(),
                bytes
            )));
        }
    } else if typed_len != numel {
        return Err(err(format!("holds {typed_len} values but dims {:?} need {numel}", t.dims)));
    }
    Ok(match dt {
        DataType::Float => {
            let v = if has_raw {
                raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            } else {
                t.float_data.clone()
            };
            Tensor::from_parts_f32(shape, v)
        }
        DataType::Int32 => {
            let v = if has_raw {
                raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()
            } else {
                t.int32_data.iter().map(|&x| x as i64).collect()
            };
            Tensor::from_parts_i64(shape, v)
        }
        _ => {
            let v = if has_raw {
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect()
            } else {
                t.int64_data.clone()
            };
            Tensor::from_parts_i64(shape, v)
        }
    })
}
