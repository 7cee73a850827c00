//! 128-bit vectors for the INT8 kernels on the two targets that have them for sure: wasm32 with
//! SIMD128 (the playground) and x86-64, whose baseline SSE2 has every operation needed (the CLI).
//! Each function is one instruction on both, or a fixed short sequence, with bit-identical
//! results: the kernels above are written once against these and tested on both targets.
//! Loads and stores take raw pointers and are unsafe; the arithmetic is safe.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use core::arch::wasm32::*;

    pub type V = v128;

    #[inline(always)]
    pub fn zero() -> V {
        i32x4_splat(0)
    }
    #[inline(always)]
    pub fn splat_i32(x: i32) -> V {
        i32x4_splat(x)
    }
    #[inline(always)]
    pub fn splat_f32(x: f32) -> V {
        f32x4_splat(x)
    }
    /// # Safety
    /// `p` must be valid for reading 16 bytes.
    #[inline(always)]
    pub unsafe fn load<T>(p: *const T) -> V {
        unsafe { v128_load(p as *const v128) }
    }
    /// # Safety
    /// `p` must be valid for writing 16 bytes.
    #[inline(always)]
    pub unsafe fn store<T>(p: *mut T, v: V) {
        unsafe { v128_store(p as *mut v128, v) }
    }
    /// The 32 bits at `p` (two i16) in every 32-bit lane.
    /// # Safety
    /// `p` must be valid for reading 4 bytes.
    #[inline(always)]
    pub unsafe fn load_pair_splat(p: *const i16) -> V {
        unsafe { v128_load32_splat(p as *const u32) }
    }
    /// i32 lanes `a[2i] * b[2i] + a[2i+1] * b[2i+1]` of i16 lanes.
    #[inline(always)]
    pub fn dot_i16(a: V, b: V) -> V {
        i32x4_dot_i16x8(a, b)
    }
    /// The 8 bytes at `p`, zero-extended to i16 lanes.
    /// # Safety
    /// `p` must be valid for reading 8 bytes.
    #[inline(always)]
    pub unsafe fn load_u8x8(p: *const u8) -> V {
        unsafe { u16x8_load_extend_u8x8(p) }
    }
    /// The low 4 bits of each i16 lane, sign-extended.
    #[inline(always)]
    pub fn nibble_lo(v: V) -> V {
        i16x8_shr(i16x8_shl(v, 12), 12)
    }
    /// Bits 4..8 of each i16 lane, sign-extended.
    #[inline(always)]
    pub fn nibble_hi(v: V) -> V {
        i16x8_shr(i16x8_shl(v, 8), 12)
    }
    /// The products of the low and of the high four i16 lanes, as i32 lanes.
    #[inline(always)]
    pub fn extmul_i16(a: V, b: V) -> (V, V) {
        (i32x4_extmul_low_i16x8(a, b), i32x4_extmul_high_i16x8(a, b))
    }
    /// i16 lanes `[a0, b0, a1, b1, a2, b2, a3, b3]`.
    #[inline(always)]
    pub fn interleave_lo_i16(a: V, b: V) -> V {
        i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(a, b)
    }
    /// i16 lanes `[a4, b4, a5, b5, a6, b6, a7, b7]`.
    #[inline(always)]
    pub fn interleave_hi_i16(a: V, b: V) -> V {
        i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(a, b)
    }
    #[inline(always)]
    pub fn add_i32(a: V, b: V) -> V {
        i32x4_add(a, b)
    }
    #[inline(always)]
    pub fn sub_i32(a: V, b: V) -> V {
        i32x4_sub(a, b)
    }
    /// i32 lanes to f32 (rounding to nearest even).
    #[inline(always)]
    pub fn to_f32(a: V) -> V {
        f32x4_convert_i32x4(a)
    }
    #[inline(always)]
    pub fn add_f32(a: V, b: V) -> V {
        f32x4_add(a, b)
    }
    #[inline(always)]
    pub fn mul_f32(a: V, b: V) -> V {
        f32x4_mul(a, b)
    }
    /// `if v < lo { lo } else { v }` per f32 lane.
    #[inline(always)]
    pub fn max_f32(v: V, lo: V) -> V {
        f32x4_pmax(v, lo)
    }
    /// `if hi < v { hi } else { v }` per f32 lane.
    #[inline(always)]
    pub fn min_f32(v: V, hi: V) -> V {
        f32x4_pmin(v, hi)
    }
    /// Two vectors of i32 lanes to one of i16 lanes, saturating.
    #[inline(always)]
    pub fn narrow_i32(a: V, b: V) -> V {
        i16x8_narrow_i32x4(a, b)
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::x86_64::*;

    // The arithmetic wrappers call SSE2 intrinsics, which are always present on x86-64.

    pub type V = __m128i;

    #[inline(always)]
    pub fn zero() -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_setzero_si128() }
    }
    #[inline(always)]
    pub fn splat_i32(x: i32) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_set1_epi32(x) }
    }
    #[inline(always)]
    pub fn splat_f32(x: f32) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_castps_si128(_mm_set1_ps(x)) }
    }
    /// # Safety
    /// `p` must be valid for reading 16 bytes.
    #[inline(always)]
    pub unsafe fn load<T>(p: *const T) -> V {
        unsafe { _mm_loadu_si128(p as *const V) }
    }
    /// # Safety
    /// `p` must be valid for writing 16 bytes.
    #[inline(always)]
    pub unsafe fn store<T>(p: *mut T, v: V) {
        unsafe { _mm_storeu_si128(p as *mut V, v) }
    }
    /// # Safety
    /// `p` must be valid for reading 4 bytes.
    #[inline(always)]
    pub unsafe fn load_pair_splat(p: *const i16) -> V {
        _mm_set1_epi32(unsafe { (p as *const i32).read_unaligned() })
    }
    #[inline(always)]
    pub fn dot_i16(a: V, b: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_madd_epi16(a, b) }
    }
    /// # Safety
    /// `p` must be valid for reading 8 bytes.
    #[inline(always)]
    pub unsafe fn load_u8x8(p: *const u8) -> V {
        unsafe { _mm_unpacklo_epi8(_mm_loadl_epi64(p as *const V), _mm_setzero_si128()) }
    }
    #[inline(always)]
    pub fn nibble_lo(v: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_srai_epi16::<12>(_mm_slli_epi16::<12>(v)) }
    }
    #[inline(always)]
    pub fn nibble_hi(v: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_srai_epi16::<12>(_mm_slli_epi16::<8>(v)) }
    }
    #[inline(always)]
    pub fn extmul_i16(a: V, b: V) -> (V, V) {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { let (lo, hi) = (_mm_mullo_epi16(a, b), _mm_mulhi_epi16(a, b));
        (_mm_unpacklo_epi16(lo, hi), _mm_unpackhi_epi16(lo, hi)) }
    }
    #[inline(always)]
    pub fn interleave_lo_i16(a: V, b: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_unpacklo_epi16(a, b) }
    }
    #[inline(always)]
    pub fn interleave_hi_i16(a: V, b: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_unpackhi_epi16(a, b) }
    }
    #[inline(always)]
    pub fn add_i32(a: V, b: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_add_epi32(a, b) }
    }
    #[inline(always)]
    pub fn sub_i32(a: V, b: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_sub_epi32(a, b) }
    }
    #[inline(always)]
    pub fn to_f32(a: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_castps_si128(_mm_cvtepi32_ps(a)) }
    }
    #[inline(always)]
    pub fn add_f32(a: V, b: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_castps_si128(_mm_add_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b))) }
    }
    #[inline(always)]
    pub fn mul_f32(a: V, b: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_castps_si128(_mm_mul_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b))) }
    }
    /// maxps returns its second operand unless the first is greater: `lo > v ? lo : v`, which
    /// is wasm's pmax(v, lo) including NaN.
    #[inline(always)]
    pub fn max_f32(v: V, lo: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_castps_si128(_mm_max_ps(_mm_castsi128_ps(lo), _mm_castsi128_ps(v))) }
    }
    /// `hi < v ? hi : v`, wasm's pmin(v, hi).
    #[inline(always)]
    pub fn min_f32(v: V, hi: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_castps_si128(_mm_min_ps(_mm_castsi128_ps(hi), _mm_castsi128_ps(v))) }
    }
    #[inline(always)]
    pub fn narrow_i32(a: V, b: V) -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_packs_epi32(a, b) }
    }
}

pub use imp::*;
