//! Windowed pooling over one NCHW image (all channels). Pads are [top, left, bottom, right].

/// Geometry of a pooling window over an `h x w` plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeom {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pads: [usize; 4],
}

/// Max over each window; padding never wins. Windows with no valid element give -inf.
pub fn max_pool(g: &PoolGeom, channels: usize, input: &[f32], out: &mut [f32]) {
    window_reduce(g, channels, input, out, |vals, _| vals.fold(f32::NEG_INFINITY, f32::max));
}

/// Average over each window. With `count_include_pad` the divisor counts padding cells (but
/// not cells past the padding that ceil_mode adds), else only real cells.
pub fn avg_pool(g: &PoolGeom, channels: usize, input: &[f32], out: &mut [f32], count_include_pad: bool) {
    window_reduce(g, channels, input, out, |vals, padded_count| {
        let mut s = 0.0f32;
        let mut n = 0usize;
        for v in vals {
            s += v;
            n += 1;
        }
        let d = if count_include_pad { padded_count } else { n };
        if d == 0 { 0.0 } else { s / d as f32 }
    });
}

fn window_reduce(
    g: &PoolGeom,
    channels: usize,
    input: &[f32],
    out: &mut [f32],
    f: impl Fn(&mut dyn Iterator<Item = f32>, usize) -> f32,
) {
    let (ph, pw) = ((g.h + g.pads[0] + g.pads[2]) as isize, (g.w + g.pads[1] + g.pads[3]) as isize);
    for c in 0..channels {
        let x = &input[c * g.h * g.w..(c + 1) * g.h * g.w];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let y0 = (oy * g.stride[0]) as isize - g.pads[0] as isize;
                let x0 = (ox * g.stride[1]) as isize - g.pads[1] as isize;
                let mut padded = 0usize;
                let mut cells = Vec::with_capacity(g.kernel[0] * g.kernel[1]);
                for ky in 0..g.kernel[0] {
                    let iy = y0 + (ky * g.dilation[0]) as isize;
                    for kx in 0..g.kernel[1] {
                        let ix = x0 + (kx * g.dilation[1]) as isize;
                        if iy + (g.pads[0] as isize) < ph && ix + (g.pads[1] as isize) < pw {
                            padded += 1;
                        }
                        if iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize {
                            cells.push(x[iy as usize * g.w + ix as usize]);
                        }
                    }
                }
                out[(c * g.oh + oy) * g.ow + ox] = f(&mut cells.into_iter(), padded);
            }
        }
    }
}
