//! ConvTranspose (2-D, grouped, strided, dilated, padded): per group a GEMM of the transposed
//! weight with the input gives every (output channel, tap) x (input pixel) product, then col2im
//! adds each into the output pixel it lands on.

use super::{Ctx, Ins, E};
use crate::error::Result;
use crate::graph::{AutoPad, Window};
use crate::kernels;
use crate::tensor::Tensor;

pub(super) fn conv_transpose(e: &E, ctx: &Ctx, ins: Ins, w: &Window, group: usize, output_padding: [usize; 2], output_shape: Option<[usize; 2]>) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    let wt = e.input(ins, 1)?;
    if x.rank() != 4 || wt.rank() != 4 {
        return Err(e.err(format!("only 2-D transposed convolution is supported (input {:?}, weight {:?})", x.shape(), wt.shape())));
    }
    let (n, c, h, wi) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (wc, mg, kh, kw) = (wt.shape()[0], wt.shape()[1], wt.shape()[2], wt.shape()[3]);
    if wc != c || c % group != 0 {
        return Err(e.err(format!("input has {c} channels, weight {:?} and group {group} do not match", wt.shape())));
    }
    if let Some(k) = w.kernel {
        if k != [kh, kw] {
            return Err(e.err(format!("kernel_shape {k:?} does not match the weight {:?}", wt.shape())));
        }
    }
    if kh == 0 || kw == 0 {
        return Err(e.err(format!("the weight {:?} has an empty kernel", wt.shape())));
    }
    let m = mg * group;
    let (xd, wd) = (e.f32(ins, 0)?, e.f32(ins, 1)?);
    let bias = e.bias(ins, m)?;
    let [sh, sw] = w.strides;
    let [dh, dw] = w.dilations;
    let span = |k: usize, d: usize| (k - 1) * d + 1;
    // Output size before padding, per axis.
    let full = [sh * (h.max(1) - 1) + output_padding[0] + span(kh, dh), sw * (wi.max(1) - 1) + output_padding[1] + span(kw, dw)];
    if output_padding[0] >= sh.max(dh) || output_padding[1] >= sw.max(dw) {
        return Err(e.err(format!("output_padding {output_padding:?} must be smaller than the stride or the dilation")));
    }
    // [top, left, bottom, right] and the output size. Given an output size (output_shape, or
    // auto_pad SAME_*: input size times stride), the padding is what is left over, split as the
    // ONNX spec says (the larger half at the start unless SAME_UPPER).
    let target = match (output_shape, w.auto_pad) {
        (Some(o), _) => Some(o),
        (None, AutoPad::SameUpper | AutoPad::SameLower) => Some([h * sh, wi * sw]),
        _ => None,
    };
    let (pads, out_hw) = match target {
        Some(target) => {
            if target[0] > full[0] || target[1] > full[1] {
                return Err(e.err(format!("output_shape {target:?} is larger than the transposed convolution gives ({full:?})")));
            }
            let split = |total: usize| if w.auto_pad == AutoPad::SameUpper { (total / 2, total - total / 2) } else { (total - total / 2, total / 2) };
            let (t, b) = split(full[0] - target[0]);
            let (l, r) = split(full[1] - target[1]);
            ([t, l, b, r], target)
        }
        None => {
            let p = if w.auto_pad == AutoPad::Valid { [0; 4] } else { w.pads };
            if p[0] + p[2] >= full[0] || p[1] + p[3] >= full[1] {
                return Err(e.err(format!("pads {p:?} leave no output of the {full:?} transposed convolution")));
            }
            ([p[0], p[1], p[2], p[3]], [full[0] - p[0] - p[2], full[1] - p[1] - p[3]])
        }
    };
    let (oh, ow) = (out_hw[0], out_hw[1]);
    let out_shape = vec![n, m, oh, ow];
    let total = e.numel(ctx, &out_shape)?;
    let cg = c / group;
    let taps = mg * kh * kw;
    if taps.saturating_mul(h * wi) > ctx.limits.max_tensor_elements {
        return Err(e.err("the column buffer would exceed the tensor element limit"));
    }
    // Per group, the weight [cg, mg*kh*kw] transposed to [mg*kh*kw, cg].
    let wt_t: Vec<Vec<f32>> = (0..group)
        .map(|g| {
            let wg = &wd[g * cg * taps..(g + 1) * cg * taps];
            let mut t = vec![0.0f32; taps * cg];
            for ci in 0..cg {
                for k in 0..taps {
                    t[k * cg + ci] = wg[ci * taps + k];
                }
            }
            t
        })
        .collect();
    let mut out = vec![0.0f32; total];
    let mut cols = vec![0.0f32; taps * h * wi];
    let hw = h * wi;
    for b in 0..n {
        for (g, wg) in wt_t.iter().enumerate() {
            let xg = &xd[(b * c + g * cg) * hw..(b * c + (g + 1) * cg) * hw];
            kernels::gemm(taps, hw, cg, wg, xg, &mut cols);
            for mo in 0..mg {
                let oc = g * mg + mo;
                let plane = &mut out[(b * m + oc) * oh * ow..(b * m + oc + 1) * oh * ow];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = &cols[((mo * kh + ky) * kw + kx) * hw..][..hw];
                        for iy in 0..h {
                            let y = (iy * sh + ky * dh) as isize - pads[0] as isize;
                            if y < 0 || y >= oh as isize {
                                continue;
                            }
                            let dst = &mut plane[y as usize * ow..(y as usize + 1) * ow];
                            for ix in 0..wi {
                                let xo = (ix * sw + kx * dw) as isize - pads[1] as isize;
                                if xo >= 0 && xo < ow as isize {
                                    dst[xo as usize] += row[iy * wi + ix];
                                }
                            }
                        }
                    }
                }
                if let Some(bd) = bias {
                    plane.iter_mut().for_each(|v| *v += bd[oc]);
                }
            }
        }
    }
    Ok(Tensor::from_parts_f32(out_shape, out))
}
