//! Reading and writing NumPy `.npy` files (format 1.0-3.0, C order, little-endian).

use crate::error::{Error, Result};
use crate::tensor::{checked_numel, Tensor};

/// Parses a `.npy` file: float32/float64 become f32 tensors, integer types become i64.
pub fn read_npy(bytes: &[u8], max_elements: usize) -> Result<Tensor> {
    let err = |m: &str| Error::Npy(m.to_string());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("not a .npy file (bad magic)"));
    }
    let (hlen, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(Error::Npy(format!("unsupported format version {v}"))),
    };
    let header = bytes.get(start..start.saturating_add(hlen)).ok_or_else(|| err("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| err("header is not text"))?;
    let field = |key: &str| -> Result<&str> {
        let at = header.find(&format!("'{key}'")).ok_or_else(|| Error::Npy(format!("header has no '{key}'")))?;
        Ok(header[at + key.len() + 2..].trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.get(1..).and_then(|d| d.split('\'').next()).ok_or_else(|| err("bad descr"))?;
    if field("fortran_order")?.starts_with("True") {
        return Err(err("Fortran-order arrays are not supported"));
    }
    let shape_s = field("shape")?;
    let shape_s = shape_s.get(1..).and_then(|s| s.split(')').next()).ok_or_else(|| err("bad shape"))?;
    let shape = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| Error::Npy(format!("bad dimension '{s}'"))))
        .collect::<Result<Vec<_>>>()?;
    let n = checked_numel(&shape).filter(|&n| n <= max_elements).ok_or_else(|| err("array is larger than the element limit"))?;
    let data = &bytes[start + hlen..];
    let size = match descr {
        "<f4" | "<i4" | "<u4" => 4,
        "<f8" | "<i8" | "<u8" => 8,
        "|u1" | "|i1" | "<u1" | "<i1" | "|b1" => 1,
        other => return Err(Error::Npy(format!("dtype '{other}' is not supported"))),
    };
    if data.len() < n * size {
        return Err(Error::Npy(format!("data has {} bytes, shape {shape:?} of {descr} needs {}", data.len(), n * size)));
    }
    let data = &data[..n * size];
    let b4 = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    let b8 = |c: &[u8]| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
    match descr {
        "<f4" => Tensor::f32(shape, data.chunks_exact(4).map(|c| f32::from_le_bytes(b4(c))).collect()),
        "<f8" => Tensor::f32(shape, data.chunks_exact(8).map(|c| f64::from_le_bytes(b8(c)) as f32).collect()),
        "<i4" => Tensor::i64(shape, data.chunks_exact(4).map(|c| i32::from_le_bytes(b4(c)) as i64).collect()),
        "<u4" => Tensor::i64(shape, data.chunks_exact(4).map(|c| u32::from_le_bytes(b4(c)) as i64).collect()),
        "<i8" => Tensor::i64(shape, data.chunks_exact(8).map(|c| i64::from_le_bytes(b8(c))).collect()),
        "<u8" => Tensor::i64(shape, data.chunks_exact(8).map(|c| u64::from_le_bytes(b8(c)) as i64).collect()),
        "|i1" | "<i1" => Tensor::i64(shape, data.iter().map(|&b| b as i8 as i64).collect()),
        _ => Tensor::i64(shape, data.iter().map(|&b| b as i64).collect()),
    }
}

/// Serialises an f32 tensor as a version-1.0 `.npy` file.
pub fn write_npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims = match shape.len() {
        1 => format!("{},", shape[0]),
        _ => shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // Pad so that magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}
