//! GGUF files (llama.cpp's format, version 3): a header (`GGUF`, version, tensor count,
//! metadata count), typed metadata key/value pairs, tensor infos (name, dimensions with the
//! fastest-varying first, element type, offset), then the tensor data, each tensor aligned to
//! `general.alignment` (32 by default) from the start of the data section.
//!
//! Reading maps the file and parses every header field with bounds checks (a truncated or
//! foreign file is an error naming the file and the field, never a panic); tensors of type F32,
//! F16, BF16 and Q8_0 can be read. Writing ([`GgufWriter`]) produces the same layout,
//! atomically.
//!
//! Dimensions: GGUF lists `ne[0]` (the row length) first; [`GgufTensor::shape`] gives them in
//! that order, so a `(rows, cols)` row-major matrix has `shape = [cols, rows]`.

use super::atomic::write_atomic;
use crate::error::{Error, Result};
use half::{bf16, f16};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The file magic.
const MAGIC: &[u8; 4] = b"GGUF";
/// Data alignment unless `general.alignment` says otherwise.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Values per `Q8_0` block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per `Q8_0` block: an f16 scale and 32 signed bytes.
pub const Q8_0_BYTES: usize = 2 + Q8_0_BLOCK;

/// Element types of tensors we read and write (ggml's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// Blocks of 32 int8 values with an f16 scale.
    Q8_0,
    /// bfloat16.
    Bf16,
}

impl GgmlType {
    fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(GgmlType::F32),
            1 => Some(GgmlType::F16),
            8 => Some(GgmlType::Q8_0),
            30 => Some(GgmlType::Bf16),
            _ => None,
        }
    }

    fn code(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::Bf16 => 30,
        }
    }

    /// Bytes of `n` elements (`n` a multiple of 32 for Q8_0).
    pub fn bytes(self, n: usize) -> usize {
        match self {
            GgmlType::F32 => 4 * n,
            GgmlType::F16 | GgmlType::Bf16 => 2 * n,
            GgmlType::Q8_0 => n / Q8_0_BLOCK * Q8_0_BYTES,
        }
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// FLOAT32 or FLOAT64.
    F64(f64),
    /// BOOL.
    Bool(bool),
    /// STRING.
    Str(String),
    /// ARRAY (of any one type).
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
}

/// One tensor's info.
#[derive(Clone, Debug)]
pub struct GgufTensor {
    /// Its name.
    pub name: String,
    /// Dimensions, fastest-varying first (`ne[0]` = row length).
    pub shape: Vec<usize>,
    /// Element type.
    pub ty: GgmlType,
    /// First byte of its data in the file.
    pub start: usize,
    /// Bytes of data.
    pub len: usize,
}

impl GgufTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A GGUF file opened for reading.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Metadata by key.
    pub metadata: HashMap<String, Value>,
    tensors: Vec<GgufTensor>,
    index: HashMap<String, usize>,
}

/// A bounds-checked reader over the header bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(Error::file(
                self.path,
                format!(
                    "truncated GGUF header: {what} needs {n} bytes at offset {}",
                    self.at
                ),
            )),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len(&mut self, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        // No length can exceed the file itself.
        if n > self.bytes.len() as u64 {
            return Err(Error::file(
                self.path,
                format!("GGUF {what} is {n}, larger than the file"),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::file(self.path, format!("GGUF {what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        let what = &format!("value of `{key}`");
        Ok(match ty {
            0 => Value::U64(self.take(1, what)?[0] as u64),
            1 => Value::I64(self.take(1, what)?[0] as i8 as i64),
            2 => {
                let b = self.take(2, what)?;
                Value::U64(u16::from_le_bytes([b[0], b[1]]) as u64)
            }
            3 => {
                let b = self.take(2, what)?;
                Value::I64(i16::from_le_bytes([b[0], b[1]]) as i64)
            }
            4 => Value::U64(self.u32(what)? as u64),
            5 => Value::I64(self.u32(what)? as i32 as i64),
            6 => Value::F64(f32::from_bits(self.u32(what)?) as f64),
            7 => Value::Bool(self.take(1, what)?[0] != 0),
            8 => Value::Str(self.string(what)?),
            9 if depth == 0 => {
                let ety = self.u32(what)?;
                let n = self.len(what)?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(ety, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(self.u64(what)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(what)?)),
            _ => {
                return Err(Error::file(
                    self.path,
                    format!("GGUF metadata `{key}` has unknown value type {ty}"),
                ))
            }
        })
    }
}

impl GgufFile {
    /// Opens and parses `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; like every memory-mapped loader, we assume the file is
        // not truncated or rewritten by another process while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let mut c = Cursor {
            bytes: &map,
            at: 0,
            path,
        };
        if c.take(4, "magic").ok() != Some(&MAGIC[..]) {
            return Err(Error::file(path, "not a GGUF file (no `GGUF` magic)"));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::file(
                path,
                format!("GGUF version {version} is not supported (2 or 3)"),
            ));
        }
        let n_tensors = c.len("tensor count")?;
        let n_kv = c.len("metadata count")?;
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata type")?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a as usize,
                _ => {
                    return Err(Error::file(
                        path,
                        format!("GGUF general.alignment {v:?} is not a power of two"),
                    ))
                }
            },
        };
        let mut infos = Vec::with_capacity(n_tensors.min(1 << 16));
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let what = format!("tensor `{name}`");
            let dims = c.u32(&what)? as usize;
            if dims == 0 || dims > 4 {
                return Err(Error::file(
                    path,
                    format!("{what} has {dims} dimensions (1..=4)"),
                ));
            }
            let mut shape = Vec::with_capacity(dims);
            for _ in 0..dims {
                shape.push(c.len(&what)?);
            }
            let code = c.u32(&what)?;
            let offset = c.len(&what)?;
            infos.push((name, shape, code, offset));
        }
        let data_start = c.at.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut index = HashMap::new();
        for (name, shape, code, offset) in infos {
            let ty = GgmlType::from_code(code).ok_or_else(|| {
                Error::file(
                    path,
                    format!(
                        "tensor `{name}` has ggml type {code}; supported: F32 (0), F16 (1), \
                         Q8_0 (8), BF16 (30)"
                    ),
                )
            })?;
            let numel = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= map.len() * 8);
            let Some(numel) = numel else {
                return Err(Error::file(path, format!("tensor `{name}` is too large")));
            };
            if ty == GgmlType::Q8_0 && !shape[0].is_multiple_of(Q8_0_BLOCK) {
                return Err(Error::file(
                    path,
                    format!(
                        "Q8_0 tensor `{name}` has rows of {}, not a multiple of 32",
                        shape[0]
                    ),
                ));
            }
            let len = ty.bytes(numel);
            let start = data_start.checked_add(offset);
            match start.and_then(|s| s.checked_add(len)) {
                Some(end) if end <= map.len() => {}
                _ => {
                    return Err(Error::file(
                        path,
                        format!(
                            "tensor `{name}` ({len} bytes at offset {offset}) runs past the end \
                             of the file ({} bytes): truncated?",
                            map.len()
                        ),
                    ))
                }
            }
            index.insert(name.clone(), tensors.len());
            tensors.push(GgufTensor {
                name,
                shape,
                ty,
                start: data_start + offset,
                len,
            });
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            metadata,
            tensors,
            index,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[GgufTensor] {
        &self.tensors
    }

    /// The tensor named `name`, if present.
    pub fn get(&self, name: &str) -> Option<&GgufTensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor named `name`, or an error naming it and the file.
    pub fn tensor(&self, name: &str) -> Result<&GgufTensor> {
        self.get(name)
            .ok_or_else(|| Error::file(&self.path, format!("missing tensor `{name}`")))
    }

    /// A tensor's raw bytes.
    pub fn data(&self, t: &GgufTensor) -> &[u8] {
        &self.map[t.start..t.start + t.len]
    }

    /// Drops the resident pages of a tensor's bytes (the file stays mapped; the bytes are read
    /// again if touched). Loading converts each tensor once, so the file need not stay in
    /// memory beside the converted weights: without this an f16 GPT-2 124M peaked at the file
    /// plus its packed copy (525 MiB).
    pub fn release(&self, t: &GgufTensor) {
        super::mapped::drop_pages(&self.map, t.start, t.len);
    }

    /// A metadata value, or an error naming the key.
    pub fn value(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::file(&self.path, format!("missing metadata `{key}`")))
    }

    /// An unsigned integer metadata value, or an error naming the key.
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.value(key)?
            .as_u64()
            .ok_or_else(|| Error::file(&self.path, format!("metadata `{key}` is not an integer")))
    }

    /// A string metadata value, or an error naming the key.
    pub fn str(&self, key: &str) -> Result<&str> {
        match self.value(key)? {
            Value::Str(s) => Ok(s),
            _ => Err(Error::file(
                &self.path,
                format!("metadata `{key}` is not a string"),
            )),
        }
    }

    /// An array of strings, or an error naming the key.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let bad = || {
            Error::file(
                &self.path,
                format!("metadata `{key}` is not an array of strings"),
            )
        };
        match self.value(key)? {
            Value::Array(v) => v
                .iter()
                .map(|x| match x {
                    Value::Str(s) => Ok(s.as_str()),
                    _ => Err(bad()),
                })
                .collect(),
            _ => Err(bad()),
        }
    }

    /// A tensor's values as f32 (Q8_0 dequantized: scale × value), in stored order.
    pub fn to_f32(&self, t: &GgufTensor) -> Vec<f32> {
        let raw = self.data(t);
        match t.ty {
            GgmlType::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            GgmlType::F16 => raw
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            GgmlType::Bf16 => raw
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            GgmlType::Q8_0 => raw
                .chunks_exact(Q8_0_BYTES)
                .flat_map(|blk| {
                    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                    blk[2..].iter().map(move |&q| d * q as i8 as f32)
                })
                .collect(),
        }
    }

    /// Block `b` of row `r` of a Q8_0 tensor: its scale and 32 values.
    pub fn q8_0_block(&self, t: &GgufTensor, r: usize, b: usize) -> (f16, [i8; Q8_0_BLOCK]) {
        let per_row = t.shape[0] / Q8_0_BLOCK;
        let at = (r * per_row + b) * Q8_0_BYTES;
        let blk = &self.data(t)[at..at + Q8_0_BYTES];
        let mut q = [0i8; Q8_0_BLOCK];
        for (q, &x) in q.iter_mut().zip(&blk[2..]) {
            *q = x as i8;
        }
        (f16::from_le_bytes([blk[0], blk[1]]), q)
    }
}

/// Builds a GGUF file in memory and writes it atomically.
#[derive(Default)]
pub struct GgufWriter {
    kv: Vec<(String, Value, u32)>,
    tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a UINT32 metadata value.
    pub fn u32(&mut self, key: &str, v: u32) {
        self.kv.push((key.into(), Value::U64(v as u64), 4));
    }

    /// Adds an INT32 metadata value.
    pub fn i32(&mut self, key: &str, v: i32) {
        self.kv.push((key.into(), Value::I64(v as i64), 5));
    }

    /// Adds a FLOAT32 metadata value.
    pub fn f32(&mut self, key: &str, v: f32) {
        self.kv.push((key.into(), Value::F64(v as f64), 6));
    }

    /// Adds a STRING metadata value.
    pub fn str(&mut self, key: &str, v: &str) {
        self.kv.push((key.into(), Value::Str(v.into()), 8));
    }

    /// Adds an ARRAY of STRING.
    pub fn strings(&mut self, key: &str, v: &[String]) {
        let a = v.iter().map(|s| Value::Str(s.clone())).collect();
        self.kv.push((key.into(), Value::Array(a), 8));
    }

    /// Adds an ARRAY of INT32.
    pub fn i32s(&mut self, key: &str, v: &[i32]) {
        let a = v.iter().map(|&x| Value::I64(x as i64)).collect();
        self.kv.push((key.into(), Value::Array(a), 5));
    }

    /// Adds a tensor of `ty` with dimensions `shape` (fastest-varying first) and its raw bytes.
    pub fn tensor(&mut self, name: &str, shape: &[usize], ty: GgmlType, data: Vec<u8>) {
        debug_assert_eq!(data.len(), ty.bytes(shape.iter().product()));
        self.tensors.push((name.into(), shape.to_vec(), ty, data));
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn put_value(out: &mut Vec<u8>, v: &Value, ty: u32) {
        match v {
            Value::U64(x) if ty == 4 => out.extend_from_slice(&(*x as u32).to_le_bytes()),
            Value::I64(x) if ty == 5 => out.extend_from_slice(&(*x as i32).to_le_bytes()),
            Value::F64(x) => out.extend_from_slice(&(*x as f32).to_le_bytes()),
            Value::Str(s) => Self::put_str(out, s),
            Value::Array(a) => {
                out.extend_from_slice(&ty.to_le_bytes());
                out.extend_from_slice(&(a.len() as u64).to_le_bytes());
                for x in a {
                    Self::put_value(out, x, ty);
                }
            }
            // Only the constructors above make values.
            _ => unreachable!("value {v:?} with type {ty}"),
        }
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, v, ty) in &self.kv {
            Self::put_str(&mut out, k);
            let outer = if matches!(v, Value::Array(_)) { 9 } else { *ty };
            out.extend_from_slice(&outer.to_le_bytes());
            Self::put_value(&mut out, v, *ty);
        }
        let mut offset = 0usize;
        for (name, shape, ty, data) in &self.tensors {
            Self::put_str(&mut out, name);
            out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for &d in shape {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&ty.code().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + data.len()).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        out.resize(out.len().div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT, 0);
        }
        out
    }

    /// Writes the file atomically (temp file + rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_read_back_and_bad_files_are_named_errors() {
        let dir = std::env::temp_dir().join(format!("gguf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.gguf");
        let mut w = GgufWriter::new();
        w.str("general.architecture", "gpt2");
        w.u32("gpt2.block_count", 2);
        w.f32("eps", 1e-5);
        w.strings("toks", &["a".into(), "b c".into()]);
        w.i32s("types", &[1, -2]);
        let vals: Vec<f32> = (0..64).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.tensor("x", &[32, 2], GgmlType::F32, bytes);
        let mut q = vec![0u8; 2 * Q8_0_BYTES];
        q[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        q[2] = (-4i8) as u8;
        w.tensor("q", &[32, 2], GgmlType::Q8_0, q);
        w.write(&path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.str("general.architecture").unwrap(), "gpt2");
        assert_eq!(f.u64("gpt2.block_count").unwrap(), 2);
        assert_eq!(f.strings("toks").unwrap(), vec!["a", "b c"]);
        assert_eq!(
            f.metadata["types"],
            Value::Array(vec![Value::I64(1), Value::I64(-2)])
        );
        assert_eq!(f.to_f32(f.tensor("x").unwrap()), vals);
        let qt = f.tensor("q").unwrap();
        assert_eq!(f.to_f32(qt)[..2], [-2.0, 0.0]);
        assert_eq!(f.q8_0_block(qt, 0, 0).1[0], -4);
        let e = f.tensor("nope").unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("t.gguf"), "{e}");
        // Truncated: every prefix is an error naming the file, never a panic.
        let all = std::fs::read(&path).unwrap();
        // (The last 28 bytes are padding after the last tensor.)
        for cut in [0, 3, 10, 30, 100, all.len() - 30] {
            std::fs::write(&path, &all[..cut]).unwrap();
            let e = GgufFile::open(&path)
                .err()
                .expect("a truncated file")
                .to_string();
            assert!(e.contains("t.gguf"), "{cut}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
