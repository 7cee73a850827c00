//! Dense tensors: a shape and row-major (C order) data, f32 for activations and weights,
//! i64 for shape arithmetic. Views into ndarray are available for layout work.

use crate::error::{Error, Result};
use ndarray::{ArrayViewD, IxDyn};

/// Element storage of a [`Tensor`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A dense row-major tensor. Invariant: `shape.iter().product() == data.len()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// Product of dims, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        Self::new(shape, TensorData::F32(data))
    }
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Self> {
        Self::new(shape, TensorData::I64(data))
    }
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self> {
        let len = match &data {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        };
        if checked_numel(&shape) != Some(len) {
            return Err(Error::Graph(format!("tensor data has {len} elements but shape {shape:?} needs a different count")));
        }
        Ok(Tensor { shape, data })
    }
    /// A tensor whose shape is known to match (internal use by kernels).
    pub(crate) fn from_parts_f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(checked_numel(&shape), Some(data.len()));
        Tensor { shape, data: TensorData::F32(data) }
    }
    pub(crate) fn from_parts_i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        debug_assert_eq!(checked_numel(&shape), Some(data.len()));
        Tensor { shape, data: TensorData::I64(data) }
    }
    pub fn scalar_f32(v: f32) -> Self {
        Tensor { shape: vec![], data: TensorData::F32(vec![v]) }
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    pub fn dtype_name(&self) -> &'static str {
        match self.data {
            TensorData::F32(_) => "float32",
            TensorData::I64(_) => "int64",
        }
    }
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            _ => None,
        }
    }
    pub fn into_f32(self) -> Option<Vec<f32>> {
        match self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }
    /// Same data, new shape (element count must match).
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Self> {
        Self::new(shape, self.data)
    }
    /// Values as i64 whatever the storage (f32 truncated toward zero), for shape arithmetic.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            TensorData::I64(v) => v.clone(),
            TensorData::F32(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    /// The first item along axis 0, as a batch of one (f32).
    pub fn first_item(&self) -> Result<Self> {
        let mut shape = self.shape.clone();
        let n = shape.first().copied().unwrap_or(1).max(1);
        if let Some(d) = shape.first_mut() {
            *d = 1;
        }
        let d = self.to_f32_vec();
        Self::f32(shape, d[..d.len() / n].to_vec())
    }
    /// Stacks `samples` (f32, the same shape after axis 0) along axis 0, `step` tensors to a
    /// batch: how the CLI batches a folder of photos for a model without a fixed batch size.
    pub fn stack(samples: &[Tensor], step: usize) -> Result<Vec<Tensor>> {
        samples
            .chunks(step.max(1))
            .map(|chunk| {
                let mut shape = chunk[0].shape.clone();
                if let Some(t) = chunk.iter().find(|t| t.shape.get(1..) != shape.get(1..)) {
                    return Err(Error::Tensor { tensor: "samples".into(), msg: format!("cannot stack a {:?} sample with a {:?} one", t.shape, shape) });
                }
                if let Some(d) = shape.first_mut() {
                    *d = chunk.iter().map(|t| t.shape.first().copied().unwrap_or(1)).sum();
                }
                Self::f32(shape, chunk.iter().flat_map(Tensor::to_f32_vec).collect())
            })
            .collect()
    }
    /// An ndarray view of f32 data.
    pub fn view_f32(&self) -> Option<ArrayViewD<'_, f32>> {
        let d = self.as_f32()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), d).ok()
    }
    pub fn view_i64(&self) -> Option<ArrayViewD<'_, i64>> {
        let d = self.as_i64()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), d).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::Tensor;

    #[test]
    fn stack_joins_samples_along_axis_0_in_steps() {
        let t = |v: f32| Tensor::f32(vec![1, 2], vec![v, v + 0.5]).unwrap();
        let b = Tensor::stack(&[t(1.0), t(2.0), t(3.0)], 2).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].shape(), b[0].as_f32().unwrap()), (&[2, 2][..], &[1.0, 1.5, 2.0, 2.5][..]));
        assert_eq!((b[1].shape(), b[1].as_f32().unwrap()), (&[1, 2][..], &[3.0, 3.5][..]));
        let odd = Tensor::f32(vec![1, 3], vec![0.0; 3]).unwrap();
        assert!(Tensor::stack(&[t(1.0), odd], 2).unwrap_err().to_string().contains("cannot stack"));
    }
}
