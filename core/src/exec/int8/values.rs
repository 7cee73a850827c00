//! The integer engine's quantized values: quantizing and dequantizing tensors (NCHW or
//! channels-last), changing their layout, and the Add of two quantized tensors.

use super::{QEnc, QTensor, Val};
use crate::error::{Error, Result};
use crate::kernels::int8::ROUND_MAGIC;
use crate::tensor::Tensor;

/// The Add of two quantized tensors of the same shape and layout: in AIMET mode the float
/// simulation's `quantize(a + b)`, in qplay mode onnxruntime's integer kernel ([`qlinear_add`]).
pub(super) fn add_quantized(a: &QTensor, b: &QTensor, enc: QEnc, out: &mut [i16]) {
    if enc.enc.ties_even {
        qlinear_add(&a.v, a.enc, &b.v, b.enc, enc, out);
    } else {
        enc.enc.quantize_sum(&a.v, a.enc.scale(), &b.v, b.enc.scale(), enc.offset(), out);
    }
}

/// The Add of two quantized tensors as onnxruntime's integer kernel (MLAS's QLinearAdd)
/// computes it, for qplay mode (ONNX rounding): on the grid indices `a`, `b` (centered values
/// minus their offsets), `y = a rA + (b rB + f)` with `rA = sA / sC`, `rB = sB / sC`,
/// `f = zC - (rA zA + rB zB)`, each multiply-add fused (one rounding, as MLAS's FMA), then rounded
/// half to even and saturated to the output grid. The fused multiply-adds are evaluated in f64,
/// where the product of an 8-bit integer and an f32 and its sum with an f32 are exact, so the
/// one rounding is the conversion back to f32 (wasm has no FMA instruction).
pub(super) fn qlinear_add(a: &[i16], ea: QEnc, b: &[i16], eb: QEnc, ec: QEnc, out: &mut [i16]) {
    let (sc, zc) = (ec.scale(), -ec.offset());
    let (ra, rb) = (ea.scale() / sc, eb.scale() / sc);
    let (oa, ob, oc, n) = (ea.offset(), eb.offset(), ec.offset(), ec.n() as f32);
    let fixed = zc as f32 - (ra * -oa as f32 + rb * -ob as f32);
    let fma = |x: i32, r: f32, t: f32| (x as f64 * r as f64 + t as f64) as f32;
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        let v = fma(x as i32 - oa, ra, fma(y as i32 - ob, rb, fixed));
        let v = if v < 0.0 { 0.0 } else { v };
        let v = if v > n { n } else { v };
        *o = (((v + ROUND_MAGIC).to_bits() as i32 - ROUND_MAGIC.to_bits() as i32) + oc) as i16;
    }
}

/// [`quantize_tensor`] of an NCHW tensor, written channels-last in the same pass.
pub(super) fn quantize_nhwc(t: &Tensor, enc: QEnc) -> Result<QTensor> {
    let d = t.as_f32().ok_or_else(|| Error::Graph(format!("cannot quantize a {} tensor", t.dtype_name())))?;
    let (n, c, hw) = (t.shape()[0], t.shape()[1], t.shape()[2] * t.shape()[3]);
    let mut v = vec![0i16; d.len()];
    let mut plane = vec![0i16; hw];
    for b in 0..n {
        for ch in 0..c {
            enc.enc.quantize_slice(&d[(b * c + ch) * hw..][..hw], enc.offset(), &mut plane);
            for (p, &q) in plane.iter().enumerate() {
                v[(b * hw + p) * c + ch] = q;
            }
        }
    }
    Ok(QTensor { shape: t.shape().to_vec(), nhwc: true, v, enc })
}

pub(super) fn quantize_tensor(t: &Tensor, enc: QEnc) -> Result<QTensor> {
    let d = t.as_f32().ok_or_else(|| Error::Graph(format!("cannot quantize a {} tensor", t.dtype_name())))?;
    let mut v = vec![0i16; d.len()];
    enc.enc.quantize_slice(d, enc.offset(), &mut v);
    Ok(QTensor { shape: t.shape().to_vec(), nhwc: false, v, enc })
}

/// A wide (9 to 16-bit) quantized tensor, NCHW: `v = q + offset` in i32.
pub(super) fn quantize_wide(t: &Tensor, enc: QEnc) -> Result<QTensor<i32>> {
    let d = t.as_f32().ok_or_else(|| Error::Graph(format!("cannot quantize a {} tensor", t.dtype_name())))?;
    let v = d.iter().map(|&x| enc.enc.quantize(x) + enc.offset()).collect();
    Ok(QTensor { shape: t.shape().to_vec(), nhwc: false, v, enc })
}

/// A float tensor quantized with `enc`: in i16 up to 8 bits (channels-last when `nhwc` and
/// 4-D), in i32 above.
pub(super) fn quantize_val(t: &Tensor, enc: QEnc, nhwc: bool) -> Result<Val> {
    Ok(if enc.wide() {
        Val::W(quantize_wide(t, enc)?)
    } else if nhwc && t.rank() == 4 {
        Val::Q(quantize_nhwc(t, enc)?)
    } else {
        Val::Q(quantize_tensor(t, enc)?)
    })
}

pub(super) fn to_float(v: Val) -> Tensor {
    match v {
        Val::F(t) => t,
        Val::Q(q) => dequantize(&q),
        Val::W(q) => dequantize(&q),
    }
}

/// The real values of a quantized tensor, in NCHW order.
pub(super) fn dequantize<T: Copy + Into<i32>>(q: &QTensor<T>) -> Tensor {
    let s = q.enc.scale();
    let real = |x: T| x.into() as f32 * s;
    if !q.nhwc {
        return Tensor::from_parts_f32(q.shape.clone(), q.v.iter().map(|&x| real(x)).collect());
    }
    let (n, c, hw) = (q.shape[0], q.shape[1], q.shape[2] * q.shape[3]);
    let mut d = vec![0f32; q.v.len()];
    for b in 0..n {
        for (p, px) in q.v[b * hw * c..(b + 1) * hw * c].chunks_exact(c.max(1)).enumerate() {
            for (ch, &x) in px.iter().enumerate() {
                d[(b * c + ch) * hw + p] = real(x);
            }
        }
    }
    Tensor::from_parts_f32(q.shape.clone(), d)
}

/// Converts a rank-4 tensor between NCHW and NHWC storage (other ranks are unchanged).
pub(super) fn relayout<T: Copy + Default>(mut q: QTensor<T>, nhwc: bool) -> QTensor<T> {
    if q.nhwc == nhwc || q.shape.len() != 4 {
        q.nhwc = nhwc && q.shape.len() == 4;
        return q;
    }
    let (n, c, hw) = (q.shape[0], q.shape[1], q.shape[2] * q.shape[3]);
    let mut out = vec![T::default(); q.v.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                let (nchw, nhwc_i) = ((b * c + ch) * hw + p, (b * hw + p) * c + ch);
                if nhwc {
                    out[nhwc_i] = q.v[nchw];
                } else {
                    out[nchw] = q.v[nhwc_i];
                }
            }
        }
    }
    q.v = out;
    q.nhwc = nhwc;
    q
}
