//! Integer kernels of the INT8 engine. Activations are held as `v = q - zero_point` in i16
//! (8-bit values, 9-bit range after the shift), weights as their signed 8-bit (or narrower)
//! values in i16, accumulation in i32. With 128-bit vectors (wasm32 SIMD128, x86-64 SSE2; see
//! [`super::lanes`]) the GEMM multiplies pairs of i16 into i32 lanes (`i32x4.dot_i16x8_s`,
//! `pmaddwd`); elsewhere a portable kernel runs.
//! Every kernel has a naive twin; integer results are bit-exact (tests/kernels.rs).

#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
use super::lanes::*;

/// Rows are padded to a multiple of this many values (zeros), the dot-product block.
pub const KBLOCK: usize = 8;

/// Rounds `k` up to the padded row length.
pub fn padded(k: usize) -> usize {
    k.div_ceil(KBLOCK) * KBLOCK
}

/// `out[i * m + j] = Σ_k x[i * kp + k] * w[j * kp + k]` for `i < p`, `j < m` (reference).
pub fn dot_gemm_naive(p: usize, m: usize, kp: usize, x: &[i16], w: &[i16], out: &mut [i32]) {
    for i in 0..p {
        for j in 0..m {
            out[i * m + j] = (0..kp).map(|k| x[i * kp + k] as i32 * w[j * kp + k] as i32).sum();
        }
    }
}

/// Weights `[m][kp]` in the layout the GEMM kernels read, packed once (when the engine is built).
///
/// With vectors: blocks of 8 output channels with their k values in pairs (`[w[j][k], w[j][k+1]]` for
/// j = j0..j0+8, two vectors per pair of k); each input pair `[x[k], x[k+1]]` is broadcast to all
/// lanes, so one `i32x4.dot_i16x8_s` adds the pair's contribution to 4 output channels at once
/// and the sums land in their lanes with no horizontal reduction (which dominated at the small K
/// of 1x1 convolutions). Weights that all fit in 4 bits (-8..=7) are stored packed, two per
/// byte (`nib`, and `data` is empty): byte `i` of a pair's 8 holds value `i` of its first vector
/// in the low nibble and value `i` of its second in the high one, unpacked by one 8-byte load and
/// two shift pairs. Elsewhere: the rows as given.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    m: usize,
    kp: usize,
    data: Vec<i16>,
    nib: Vec<u8>,
    #[cfg(all(target_arch = "wasm32", feature = "relaxed"))]
    relaxed: Option<relaxed::Packed>,
}

impl PackedWeights {
    /// `w` holds `m` rows of `kp` values; `kp` must be a multiple of [`KBLOCK`].
    pub fn new(m: usize, kp: usize, w: &[i16]) -> Self {
        assert!(kp.is_multiple_of(KBLOCK) && w.len() >= m * kp, "PackedWeights: bad sizes");
        #[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
        {
            let (blocks, pairs) = (m.div_ceil(8), kp / 2);
            let mut data = vec![0i16; blocks * pairs * 16];
            for j in 0..m {
                let (b, jj) = (j / 8, j % 8);
                for k2 in 0..pairs {
                    let at = (b * pairs + k2) * 16 + jj * 2;
                    data[at] = w[j * kp + 2 * k2];
                    data[at + 1] = w[j * kp + 2 * k2 + 1];
                }
            }
            #[cfg(all(target_arch = "wasm32", feature = "relaxed"))]
            let relaxed = relaxed::Packed::new(m, kp, w);
            if data.iter().all(|v| (-8..=7).contains(v)) {
                let nib = data.chunks_exact(16).flat_map(|p| (0..8).map(|i| (p[i] as u8 & 0xF) | ((p[8 + i] as u8) << 4))).collect();
                return PackedWeights {
                    m,
                    kp,
                    data: Vec::new(),
                    nib,
                    #[cfg(all(target_arch = "wasm32", feature = "relaxed"))]
                    relaxed,
                };
            }
            PackedWeights {
                m,
                kp,
                data,
                nib: Vec::new(),
                #[cfg(all(target_arch = "wasm32", feature = "relaxed"))]
                relaxed,
            }
        }
        #[cfg(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")))]
        PackedWeights { m, kp, data: w[..m * kp].to_vec(), nib: Vec::new() }
    }

    /// Bytes the weights occupy (half a byte each when packed in 4 bits, else two).
    pub fn bytes(&self) -> usize {
        #[cfg(all(target_arch = "wasm32", feature = "relaxed"))]
        let extra = self.relaxed.as_ref().map_or(0, relaxed::Packed::bytes);
        #[cfg(not(all(target_arch = "wasm32", feature = "relaxed")))]
        let extra = 0;
        self.data.len() * 2 + self.nib.len() + extra
    }

    /// Stored two per byte.
    pub fn is_4bit(&self) -> bool {
        !self.nib.is_empty()
    }
}

/// Same as [`dot_gemm_naive`]; `kp` must be a multiple of [`KBLOCK`]. Sums are exact (no
/// overflow for |x| <= 255, |w| <= 128 and kp < 2^16). Packs the weights on each call; engines
/// pack once and call [`dot_gemm_packed`] or [`dot_gemm_requant`].
pub fn dot_gemm(p: usize, m: usize, kp: usize, x: &[i16], w: &[i16], out: &mut [i32]) {
    dot_gemm_packed(p, x, &PackedWeights::new(m, kp, w), out);
}

/// [`dot_gemm`] on packed weights: `out[i * m + j] = Σ_k x[i * kp + k] * w[j][k]`.
#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
pub fn dot_gemm_packed(p: usize, x: &[i16], w: &PackedWeights, out: &mut [i32]) {
    let m = w.m;
    assert!(x.len() >= p * w.kp && out.len() >= p * m, "dot_gemm: bad sizes");
    gemm_blocks(p, x, w, |row, b, acc| {
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` holds 8 i32 = two vectors.
        unsafe {
            store(lanes.as_mut_ptr(), acc[0]);
            store(lanes.as_mut_ptr().add(4), acc[1]);
        }
        let cols = 8.min(m - b * 8);
        out[row * m + b * 8..][..cols].copy_from_slice(&lanes[..cols]);
    });
}

/// Sums of `R` rows (each `pairs` k-pairs long) against one packed block of 8 output channels
/// (`pair(k2)` gives its two weight vectors for the pair k2): 2R accumulators in registers.
#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
#[inline(always)]
fn tile<const R: usize>(xr: [&[i16]; R], pair: impl Fn(usize) -> (V, V), pairs: usize) -> [[V; 2]; R] {
    assert!(xr.iter().all(|r| r.len() >= 2 * pairs));
    let mut acc = [[zero(); 2]; R];
    for k2 in 0..pairs {
        let (w0, w1) = pair(k2);
        // SAFETY: bounds asserted above; the loads are unaligned ones.
        unsafe {
            for r in 0..R {
                let a = load_pair_splat(xr[r].as_ptr().add(2 * k2));
                acc[r][0] = add_i32(acc[r][0], dot_i16(a, w0));
                acc[r][1] = add_i32(acc[r][1], dot_i16(a, w1));
            }
        }
    }
    acc
}

/// The blocked product of [`dot_gemm_packed`] (vectors): calls `emit(row, block, sums)` with the
/// sums of one row for the 8 output channels of block `block` (lanes past `m` hold garbage).
/// Rows go 4 at a time (8 accumulators), the last ones one at a time.
#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
#[inline(always)]
#[cfg_attr(not(all(target_arch = "wasm32", feature = "relaxed")), allow(unused_mut))]
fn gemm_blocks(p: usize, x: &[i16], w: &PackedWeights, mut emit: impl FnMut(usize, usize, [V; 2])) {
    #[cfg(all(target_arch = "wasm32", feature = "relaxed"))]
    if let Some(r) = &w.relaxed {
        let done = relaxed::PLANES.with_borrow_mut(|planes| {
            let ok = relaxed::split(p, w.kp, x, planes);
            if ok {
                // SAFETY: this build requires an engine with relaxed SIMD (the page loads it only
                // where `WebAssembly.validate` accepts relaxed opcodes).
                unsafe { relaxed::blocks(p, w.m, w.kp, planes, r, &mut emit) };
            }
            ok
        });
        if done {
            return;
        }
    }
    let pairs = w.kp / 2;
    let blocks = w.m.div_ceil(8);
    if w.nib.is_empty() {
        assert!(w.data.len() >= blocks * pairs * 16);
        // SAFETY (both loads): k2 < pairs and b < blocks, within the length asserted above.
        gemm_blocks_with(p, x, w, |b, k2| unsafe {
            let at = w.data.as_ptr().add((b * pairs + k2) * 16);
            (load(at), load(at.add(8)))
        }, emit)
    } else {
        assert!(w.nib.len() >= blocks * pairs * 8);
        gemm_blocks_with(p, x, w, |b, k2| {
            // SAFETY: k2 < pairs and b < blocks, within the length asserted above.
            let v = unsafe { load_u8x8(w.nib.as_ptr().add((b * pairs + k2) * 8)) };
            (nibble_lo(v), nibble_hi(v))
        }, emit)
    }
}

/// The GEMM with relaxed SIMD's `i32x4.relaxed_dot_i8x16_i7x16_add_s` (16 products of an i8 by
/// a 7-bit unsigned value per instruction; `vpdpbusd` on x86 with AVX-VNNI, `sdot` on ARM), in
/// the build with the `relaxed` feature. An engine may read the second operand's top bit as
/// signed or unsigned, so it only ever holds 0..=127 and every engine gives the same sums, equal
/// to the SIMD128 kernel's. Weights are the first operand (i8); an activation `v` in -256..=255
/// is split as `v = lo + 128 * hi - 256` with `lo = v & 127` and `hi = (v >> 7) + 2` in 0..=3,
/// so a sum is `Σ w lo + 128 Σ w hi - 256 Σ w`: two dots and a per-channel constant.
#[cfg(all(target_arch = "wasm32", feature = "relaxed"))]
mod relaxed {
    use core::arch::wasm32::*;
    use std::cell::RefCell;

    std::thread_local! {
        /// The split rows of the current product, kept between calls (no allocation per inference).
        pub static PLANES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// Blocks of 8 output channels; per block and group of 4 k, two vectors of 16 i8: channels
    /// 0..4 then 4..8, each with its 4 consecutive weights. `corr[j] = -256 Σ_k w[j][k]`.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Packed {
        data: Vec<i8>,
        corr: Vec<i32>,
    }

    impl Packed {
        /// None when a weight does not fit in i8 (the SIMD128 kernel then runs).
        pub fn new(m: usize, kp: usize, w: &[i16]) -> Option<Packed> {
            let w = &w[..m * kp];
            if w.iter().any(|&v| i8::try_from(v).is_err()) {
                return None;
            }
            let (blocks, quads) = (m.div_ceil(8), kp / 4);
            let mut data = vec![0i8; blocks * quads * 32];
            let mut corr = vec![0i32; blocks * 8];
            for j in 0..m {
                let (b, jj) = (j / 8, j % 8);
                let row = &w[j * kp..(j + 1) * kp];
                for (k, &v) in row.iter().enumerate() {
                    data[(b * quads + k / 4) * 32 + jj * 4 + k % 4] = v as i8;
                }
                corr[j] = -256 * row.iter().map(|&v| v as i32).sum::<i32>();
            }
            Some(Packed { data, corr })
        }

        pub fn bytes(&self) -> usize {
            self.data.len() + self.corr.len() * 4
        }
    }

    /// Row `i` of `x` (`kp` values) becomes `planes[2 kp i..]`: its `lo` bytes, then its `hi`
    /// bytes. False (and `planes` unusable) if a value lies outside -256..=255.
    pub fn split(p: usize, kp: usize, x: &[i16], planes: &mut Vec<u8>) -> bool {
        planes.resize(2 * p * kp, 0);
        let mut bad = 0i16;
        for (row, out) in x[..p * kp].chunks_exact(kp).zip(planes.chunks_exact_mut(2 * kp)) {
            let (lo, hi) = out.split_at_mut(kp);
            for ((&v, l), h) in row.iter().zip(lo).zip(hi) {
                bad |= (v < -256) as i16 | (v > 255) as i16;
                *l = (v & 127) as u8;
                *h = ((v >> 7) + 2) as u8;
            }
        }
        bad == 0
    }

    /// The blocked product on split rows: `emit(row, block, sums)` as in `gemm_blocks`.
    /// # Safety
    /// The engine must support relaxed SIMD.
    #[target_feature(enable = "relaxed-simd")]
    pub unsafe fn blocks(p: usize, m: usize, kp: usize, planes: &[u8], w: &Packed, emit: &mut impl FnMut(usize, usize, [v128; 2])) {
        let (blocks, quads) = (m.div_ceil(8), kp / 4);
        assert!(planes.len() >= 2 * p * kp && w.data.len() >= blocks * quads * 32 && w.corr.len() >= blocks * 8);
        let row = |i: usize| planes[2 * kp * i..].as_ptr();
        let mut finish = |i: usize, b: usize, sums: &[[v128; 4]]| {
            // SAFETY: b < blocks, within `corr`'s asserted length.
            let (c0, c1) = unsafe { (v128_load(w.corr.as_ptr().add(b * 8) as *const v128), v128_load(w.corr.as_ptr().add(b * 8 + 4) as *const v128)) };
            for (r, a) in sums.iter().enumerate() {
                let s0 = i32x4_add(i32x4_add(a[0], i32x4_shl(a[2], 7)), c0);
                let s1 = i32x4_add(i32x4_add(a[1], i32x4_shl(a[3], 7)), c1);
                emit(i + r, b, [s0, s1]);
            }
        };
        let mut i = 0;
        while i + 2 <= p {
            for b in 0..blocks {
                // SAFETY: rows i, i + 1 < p and block b are within the lengths asserted above.
                let sums = unsafe { tile::<2>([row(i), row(i + 1)], kp, w.data[b * quads * 32..].as_ptr(), quads) };
                finish(i, b, &sums);
            }
            i += 2;
        }
        if i < p {
            for b in 0..blocks {
                // SAFETY: as above, for the last row.
                let sums = unsafe { tile::<1>([row(i)], kp, w.data[b * quads * 32..].as_ptr(), quads) };
                finish(i, b, &sums);
            }
        }
    }

    /// Sums of `R` split rows against one block: per row, the `lo` and `hi` dots of channels
    /// 0..4 and 4..8 (8R accumulators in registers, within x64's 16 for R = 2).
    /// # Safety
    /// Each row holds `2 kp` bytes, `wb` `32 quads` bytes; the engine has relaxed SIMD.
    #[target_feature(enable = "relaxed-simd")]
    #[inline]
    unsafe fn tile<const R: usize>(rows: [*const u8; R], kp: usize, wb: *const i8, quads: usize) -> [[v128; 4]; R] {
        let mut acc = [[i32x4_splat(0); 4]; R];
        for q in 0..quads {
            // SAFETY: the caller's bounds.
            unsafe {
                let w0 = v128_load(wb.add(q * 32) as *const v128);
                let w1 = v128_load(wb.add(q * 32 + 16) as *const v128);
                for r in 0..R {
                    let lo = v128_load32_splat(rows[r].add(4 * q) as *const u32);
                    let hi = v128_load32_splat(rows[r].add(kp + 4 * q) as *const u32);
                    acc[r][0] = i32x4_relaxed_dot_i8x16_i7x16_add(w0, lo, acc[r][0]);
                    acc[r][1] = i32x4_relaxed_dot_i8x16_i7x16_add(w1, lo, acc[r][1]);
                    acc[r][2] = i32x4_relaxed_dot_i8x16_i7x16_add(w0, hi, acc[r][2]);
                    acc[r][3] = i32x4_relaxed_dot_i8x16_i7x16_add(w1, hi, acc[r][3]);
                }
            }
        }
        acc
    }
}

/// [`gemm_blocks`] with the weight vectors of block `b`, pair `k2` from `pair(b, k2)`.
#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
#[inline(always)]
fn gemm_blocks_with(p: usize, x: &[i16], w: &PackedWeights, pair: impl Fn(usize, usize) -> (V, V), mut emit: impl FnMut(usize, usize, [V; 2])) {
    let (m, kp) = (w.m, w.kp);
    if p == 0 || m == 0 {
        return;
    }
    let (blocks, pairs) = (m.div_ceil(8), kp / 2);
    let row = |i: usize| &x[i * kp..(i + 1) * kp];
    let mut i = 0;
    while i + 4 <= p {
        let xr: [&[i16]; 4] = core::array::from_fn(|r| row(i + r));
        for b in 0..blocks {
            for (r, &sums) in tile::<4>(xr, |k2| pair(b, k2), pairs).iter().enumerate() {
                emit(i + r, b, sums);
            }
        }
        i += 4;
    }
    for i in i..p {
        for b in 0..blocks {
            let [sums] = tile::<1>([row(i)], |k2| pair(b, k2), pairs);
            emit(i, b, sums);
        }
    }
}

/// [`dot_gemm`] followed by [`requantize`] with the parameters of `rq`, into `out` ([p, m]);
/// bit-identical to the two steps. With vectors the requantization happens on the sums while they
/// are in registers (no i32 buffer).
#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
pub fn dot_gemm_requant(p: usize, x: &[i16], w: &PackedWeights, rq: &Requant, out: &mut [i16]) {
    let m = w.m;
    assert!(x.len() >= p * w.kp && out.len() >= p * m && rq.len() == m, "dot_gemm_requant: bad sizes");
    gemm_blocks(p, x, w, |row, b, acc| {
        let v = rq.lanes(b * 8, acc);
        let cols = 8.min(m - b * 8);
        let o = &mut out[row * m + b * 8..][..cols];
        if cols == 8 {
            // SAFETY: `o` holds 8 i16 = one vector.
            unsafe { store(o.as_mut_ptr(), v) };
        } else {
            let mut lanes = [0i16; 8];
            // SAFETY: `lanes` holds 8 i16 = one vector.
            unsafe { store(lanes.as_mut_ptr(), v) };
            o.copy_from_slice(&lanes[..cols]);
        }
    });
}

/// [`dot_gemm`] followed by [`requantize`] with the parameters of `rq`, into `out` ([p, m]).
#[cfg(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")))]
pub fn dot_gemm_requant(p: usize, x: &[i16], w: &PackedWeights, rq: &Requant, out: &mut [i16]) {
    let mut acc = vec![0i32; p * w.m];
    dot_gemm_packed(p, x, w, &mut acc);
    requantize(&acc, rq, out);
}

/// 1.5 * 2^23. For |v| < 2^22, `v + ROUND_MAGIC` rounds to an f32 whose low mantissa bits hold
/// `round_half_even(v)`: rounding and conversion in one add, where wasm's float-to-int
/// conversion (`i32x4.trunc_sat_f32x4_s`) costs several instructions on x64.
pub(crate) const ROUND_MAGIC: f32 = 12_582_912.0;

/// Requantization of `m` output channels: `q = round_half_even(clamp(f32(acc + bias[j]) *
/// mult[j] + add[j], lo[j], hi[j]))`, in f32 arithmetic that is the same on every target and in
/// every kernel. `q` is the centered output (grid index plus offset), so no zero point enters
/// the rounding: with an integer bias and `add = 0` this is exactly onnxruntime's requantization
/// of its integer kernels (`round(float(acc + bias) * scale)`, then the zero point, saturated).
/// The bounds carry the output range and any fused activation; since they are integers,
/// clamping before rounding equals clamping after, and keeps the rounding trick in range. Built
/// once per layer; the parameters are padded with zeros to whole blocks of 8 channels for the
/// SIMD kernels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Requant {
    m: usize,
    bias: Vec<i32>,
    mult: Vec<f32>,
    add: Vec<f32>,
    lo: Vec<f32>,
    hi: Vec<f32>,
}

impl Requant {
    /// Parameters per channel (all of length m); `lo[j] <= hi[j]`, both small integers.
    pub fn new(mult: &[f32], bias: &[i32], add: &[f32], lo: &[i32], hi: &[i32]) -> Self {
        let m = mult.len();
        assert!(bias.len() == m && add.len() == m && lo.len() == m && hi.len() == m, "Requant: parameters of different lengths");
        let blocks = m.div_ceil(8) * 8;
        let pad = |v: Vec<f32>| {
            let mut v = v;
            v.resize(blocks, 0.0);
            v
        };
        let mut b = bias.to_vec();
        b.resize(blocks, 0);
        Requant {
            m,
            bias: b,
            mult: pad(mult.to_vec()),
            add: pad(add.to_vec()),
            lo: pad(lo.iter().map(|&v| v as f32).collect()),
            hi: pad(hi.iter().map(|&v| v as f32).collect()),
        }
    }

    pub fn len(&self) -> usize {
        self.m
    }

    pub fn is_empty(&self) -> bool {
        self.m == 0
    }

    /// Channels `c0..c0 + acc.len()` of one row.
    #[inline(always)]
    fn row(&self, c0: usize, acc: &[i32], out: &mut [i16]) {
        let n = acc.len();
        let (bias, mult, add, lo, hi) = (&self.bias[c0..c0 + n], &self.mult[c0..c0 + n], &self.add[c0..c0 + n], &self.lo[c0..c0 + n], &self.hi[c0..c0 + n]);
        for j in 0..n {
            // Compare-and-select (not f32::max/min, whose NaN rules keep the loop scalar): the
            // same operations as the pmin/pmax of the SIMD kernels.
            let v = acc[j].wrapping_add(bias[j]) as f32 * mult[j] + add[j];
            let v = if v < lo[j] { lo[j] } else { v };
            let v = if v > hi[j] { hi[j] } else { v };
            out[j] = ((v + ROUND_MAGIC).to_bits() as i32 - ROUND_MAGIC.to_bits() as i32) as i16;
        }
    }

    /// The 8 sums of channels `c..c + 8` requantized to i16 lanes: the operations of
    /// [`Requant::row`] on 4 lanes at a time (vectors).
    #[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
    #[inline(always)]
    fn lanes(&self, c: usize, acc: [V; 2]) -> V {
        assert!(c + 8 <= self.mult.len());
        let magic = splat_f32(ROUND_MAGIC);
        let shift = splat_i32(ROUND_MAGIC.to_bits() as i32);
        let q: [V; 2] = core::array::from_fn(|h| {
            let at = c + h * 4;
            // SAFETY: bounds asserted above (the vectors hold whole blocks of 8).
            let (bi, mu, ad, l, u) = unsafe {
                (load(self.bias.as_ptr().add(at)), load(self.mult.as_ptr().add(at)), load(self.add.as_ptr().add(at)), load(self.lo.as_ptr().add(at)), load(self.hi.as_ptr().add(at)))
            };
            let v = add_f32(mul_f32(to_f32(add_i32(acc[h], bi)), mu), ad);
            let v = min_f32(max_f32(v, l), u);
            sub_i32(add_f32(v, magic), shift)
        });
        narrow_i32(q[0], q[1])
    }
}

/// [`dot_gemm`] on packed weights: `out[i * m + j] = Σ_k x[i * kp + k] * w[j][k]`.
#[cfg(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")))]
pub fn dot_gemm_packed(p: usize, x: &[i16], w: &PackedWeights, out: &mut [i32]) {
    dot_gemm_rows(p, w.m, w.kp, x, &w.data, out);
}

/// The portable kernel (targets without 128-bit vectors) on weights as plain rows `[m][kp]`:
/// 2x4 blocks of dot products in KBLOCK lanes, which compilers vectorise. Compiled everywhere
/// so that it is tested everywhere.
pub fn dot_gemm_rows(p: usize, m: usize, kp: usize, x: &[i16], w: &[i16], out: &mut [i32]) {
    assert!(kp.is_multiple_of(KBLOCK) && w.len() >= m * kp, "dot_gemm: bad sizes");
    assert!(x.len() >= p * kp && out.len() >= p * m, "dot_gemm: bad sizes");
    let mut i = 0;
    while i + 2 <= p {
        let mut j = 0;
        while j + 4 <= m {
            let r = block_2x4(&x[i * kp..(i + 2) * kp], &w[j * kp..(j + 4) * kp], kp);
            out[i * m + j..i * m + j + 4].copy_from_slice(&r[0]);
            out[(i + 1) * m + j..(i + 1) * m + j + 4].copy_from_slice(&r[1]);
            j += 4;
        }
        for jj in j..m {
            for ii in i..i + 2 {
                out[ii * m + jj] = dot(&x[ii * kp..(ii + 1) * kp], &w[jj * kp..(jj + 1) * kp]);
            }
        }
        i += 2;
    }
    for ii in i..p {
        for jj in 0..m {
            out[ii * m + jj] = dot(&x[ii * kp..(ii + 1) * kp], &w[jj * kp..(jj + 1) * kp]);
        }
    }
}

fn dot(a: &[i16], b: &[i16]) -> i32 {
    let mut acc = [0i32; KBLOCK];
    for (x, y) in a.chunks_exact(KBLOCK).zip(b.chunks_exact(KBLOCK)) {
        for l in 0..KBLOCK {
            acc[l] += x[l] as i32 * y[l] as i32;
        }
    }
    acc.iter().sum()
}

fn block_2x4(x: &[i16], w: &[i16], kp: usize) -> [[i32; 4]; 2] {
    let mut acc = [[[0i32; KBLOCK]; 4]; 2];
    for k0 in (0..kp).step_by(KBLOCK) {
        for (r, row) in acc.iter_mut().enumerate() {
            let xs = &x[r * kp + k0..r * kp + k0 + KBLOCK];
            for (c, a) in row.iter_mut().enumerate() {
                let ws = &w[c * kp + k0..c * kp + k0 + KBLOCK];
                for l in 0..KBLOCK {
                    a[l] += xs[l] as i32 * ws[l] as i32;
                }
            }
        }
    }
    acc.map(|row| row.map(|a| a.iter().sum()))
}

/// Geometry of an NHWC depthwise convolution over one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwGeom {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// [top, left, bottom, right]
    pub pads: [usize; 4],
}

/// Depthwise convolution, NHWC: `out[(oy*ow+ox)*c + ch] = Σ_taps x[(iy*w+ix)*c + ch] * wt[tap*c + ch]`,
/// padding contributing zero. The loop over channels is contiguous and vectorises.
pub fn depthwise_nhwc(g: &DwGeom, x: &[i16], wt: &[i16], out: &mut [i32]) {
    let c = g.c;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let acc = &mut out[(oy * g.ow + ox) * c..(oy * g.ow + ox + 1) * c];
            acc.fill(0);
            super::for_each_tap((g.h, g.w), (g.kh, g.kw), g.stride, g.dilation, g.pads, (oy, ox), |t, px| {
                let (xs, ws) = (&x[px * c..][..c], &wt[t * c..][..c]);
                for ((a, &xv), &wv) in acc.iter_mut().zip(xs).zip(ws) {
                    *a += xv as i32 * wv as i32;
                }
            });
        }
    }
}

/// [`depthwise_nhwc`] followed by [`requantize`] with the parameters of `rq`, for `images`
/// images in a row, into `out` ([images, oh * ow, c]); bit-identical to the two steps. With vectors, 8 channels at a time accumulate in
/// registers over the taps inside the image, two taps per pair-dot (`i32x4.dot_i16x8_s` on the
/// taps' values interleaved), and are requantized there: no i32 buffer, no per-tap closure.
#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
pub fn depthwise_requant(g: &DwGeom, images: usize, x: &[i16], wt: &[i16], rq: &Requant, out: &mut [i16]) {
    let c = g.c;
    let (isz, osz) = (g.h * g.w * c, g.oh * g.ow * c);
    assert!(x.len() >= images * isz && wt.len() >= g.kh * g.kw * c && out.len() >= images * osz && rq.len() == c, "depthwise_requant: bad sizes");
    let mut tail = vec![0i32; c % 8];
    // Taps as (offset in x, offset in the weights): every tap relative to the window's corner
    // (pixels whose window lies inside the image), or a border pixel's taps inside the image.
    let all: Vec<(usize, usize)> = (0..g.kh).flat_map(|ky| (0..g.kw).map(move |kx| ((ky * g.dilation[0] * g.w + kx * g.dilation[1]) * c, (ky * g.kw + kx) * c))).collect();
    let mut inside: Vec<(usize, usize)> = Vec::with_capacity(g.kh * g.kw);
    for (x, out) in x.chunks_exact(isz.max(1)).zip(out.chunks_exact_mut(osz.max(1))).take(images) {
        depthwise_image(g, x, wt, rq, out, &all, &mut inside, &mut tail);
    }
}

/// One image of [`depthwise_requant`], with its scratch.
#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn depthwise_image(g: &DwGeom, x: &[i16], wt: &[i16], rq: &Requant, out: &mut [i16], all: &[(usize, usize)], inside: &mut Vec<(usize, usize)>, tail: &mut [i32]) {
    let c = g.c;
    let full = c / 8 * 8;
    // The taps of one axis that land inside the image: k in lo..hi.
    let taps = |o: usize, stride: usize, dil: usize, pad: usize, size: usize, k: usize| {
        let start = (o * stride) as isize - pad as isize;
        let lo = (0..k).find(|&t| start + (t * dil) as isize >= 0).unwrap_or(k);
        let hi = (0..k).rev().find(|&t| start + ((t * dil) as isize) < size as isize).map_or(0, |t| t + 1);
        (start, lo, hi.max(lo))
    };
    for oy in 0..g.oh {
        let (y0, ky_lo, ky_hi) = taps(oy, g.stride[0], g.dilation[0], g.pads[0], g.h, g.kh);
        for ox in 0..g.ow {
            let (x0, kx_lo, kx_hi) = taps(ox, g.stride[1], g.dilation[1], g.pads[1], g.w, g.kw);
            let (list, base) = if (ky_lo, ky_hi, kx_lo, kx_hi) == (0, g.kh, 0, g.kw) {
                (all, (y0 as usize * g.w + x0 as usize) * c)
            } else {
                inside.clear();
                for ky in ky_lo..ky_hi {
                    let iy = (y0 + (ky * g.dilation[0]) as isize) as usize;
                    for kx in kx_lo..kx_hi {
                        let ix = (x0 + (kx * g.dilation[1]) as isize) as usize;
                        inside.push(((iy * g.w + ix) * c, (ky * g.kw + kx) * c));
                    }
                }
                (&inside[..], 0)
            };
            let (pairs, single) = list.as_chunks::<2>();
            let o = &mut out[(oy * g.ow + ox) * c..][..c];
            for cb in (0..full).step_by(8) {
                let (mut lo, mut hi) = (zero(), zero());
                // Two taps at once: their values interleaved per channel, so that one
                // i16 pair-dot adds both products of 4 channels.
                for &[(xa, wa), (xb, wb)] in pairs {
                    // SAFETY: the offsets are of pixels inside the image and of kernel taps, and
                    // cb + 8 <= c, so every read stays within the lengths asserted above.
                    let (x0, x1, w0, w1) = unsafe { (load(x.as_ptr().add(base + xa + cb)), load(x.as_ptr().add(base + xb + cb)), load(wt.as_ptr().add(wa + cb)), load(wt.as_ptr().add(wb + cb))) };
                    lo = add_i32(lo, dot_i16(interleave_lo_i16(x0, x1), interleave_lo_i16(w0, w1)));
                    hi = add_i32(hi, dot_i16(interleave_hi_i16(x0, x1), interleave_hi_i16(w0, w1)));
                }
                for &(xa, wa) in single {
                    // SAFETY: as above.
                    let (xv, wv) = unsafe { (load(x.as_ptr().add(base + xa + cb)), load(wt.as_ptr().add(wa + cb))) };
                    let (pl, ph) = extmul_i16(xv, wv);
                    lo = add_i32(lo, pl);
                    hi = add_i32(hi, ph);
                }
                let v = rq.lanes(cb, [lo, hi]);
                // SAFETY: `o` holds c >= cb + 8 values.
                unsafe { store(o.as_mut_ptr().add(cb), v) };
            }
            if full < c {
                tail.fill(0);
                for &(xa, wa) in list {
                    let (xs, ws) = (&x[base + xa + full..][..c - full], &wt[wa + full..][..c - full]);
                    for ((a, &xv), &wv) in tail.iter_mut().zip(xs).zip(ws) {
                        *a += xv as i32 * wv as i32;
                    }
                }
                rq.row(full, tail, &mut o[full..]);
            }
        }
    }
}

/// [`depthwise_nhwc`] followed by [`requantize`] with the parameters of `rq`, for `images`
/// images, into `out`.
#[cfg(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")))]
pub fn depthwise_requant(g: &DwGeom, images: usize, x: &[i16], wt: &[i16], rq: &Requant, out: &mut [i16]) {
    let (isz, osz) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    let mut acc = vec![0i32; osz];
    for (x, out) in x.chunks_exact(isz.max(1)).zip(out.chunks_exact_mut(osz.max(1))).take(images) {
        depthwise_nhwc(g, x, wt, &mut acc);
        requantize(&acc, rq, out);
    }
}

/// Reference for [`depthwise_nhwc`], written from the definition.
pub fn depthwise_nhwc_naive(g: &DwGeom, x: &[i16], wt: &[i16], out: &mut [i32]) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for ch in 0..g.c {
                let mut s = 0i32;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.pads[0] as isize;
                        let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize - g.pads[1] as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                            s += x[(iy as usize * g.w + ix as usize) * g.c + ch] as i32 * wt[(ky * g.kw + kx) * g.c + ch] as i32;
                        }
                    }
                }
                out[(oy * g.ow + ox) * g.c + ch] = s;
            }
        }
    }
}

/// Requantizes accumulators of `rq.len()` channels (row-major [rows, m]) with [`Requant`].
pub fn requantize(acc: &[i32], rq: &Requant, out: &mut [i16]) {
    if rq.is_empty() {
        return;
    }
    for (row_a, row_o) in acc.chunks_exact(rq.m).zip(out.chunks_exact_mut(rq.m)) {
        rq.row(0, row_a, row_o);
    }
}
