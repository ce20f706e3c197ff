//! safetensors files: an 8-byte little-endian header length, a JSON header mapping each tensor
//! name to `{dtype, shape, data_offsets}` (plus an optional `__metadata__` string map), then the
//! raw little-endian data. Reading maps the file (nothing is copied until a tensor is asked for)
//! and converts F32, F16 and BF16 to f32; writing is f32, atomic.
//!
//! [`TensorFile`] also exposes what an in-place loader needs: each tensor's dtype and absolute
//! byte range, the end of the header, the map itself, and plain file reads of a byte range (for
//! streaming a large tensor through a small buffer).

use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub use ::safetensors::Dtype;

/// One tensor as stored in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTensor {
    /// Its name in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// First byte of its data, counted from the start of the file.
    pub start: usize,
    /// Bytes of data.
    pub len: usize,
}

impl StoredTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A safetensors file opened for reading: memory-mapped, header parsed and checked.
pub struct TensorFile {
    path: PathBuf,
    file: std::fs::File,
    map: memmap2::Mmap,
    header_end: usize,
    /// In file order (by `start`).
    tensors: Vec<StoredTensor>,
    index: HashMap<String, usize>,
    metadata: HashMap<String, String>,
}

/// Bytes per element of the dtypes we convert (F32, F16, BF16); `None` for the others.
pub fn dtype_size(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F32 => Some(4),
        Dtype::F16 | Dtype::BF16 => Some(2),
        _ => None,
    }
}

/// Converts one stored tensor's bytes (`dtype` F32, F16 or BF16, little-endian) into `dst`;
/// other dtypes are an error naming the file and the tensor.
pub fn to_f32(dtype: Dtype, raw: &[u8], dst: &mut [f32], name: &str, path: &Path) -> Result<()> {
    match dtype {
        Dtype::F32 => {
            for (d, b) in dst.iter_mut().zip(raw.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (d, b) in dst.iter_mut().zip(raw.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (d, b) in dst.iter_mut().zip(raw.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        d => return Err(Error::file(path, unsupported_dtype(name, d))),
    }
    Ok(())
}

fn unsupported_dtype(name: &str, d: Dtype) -> String {
    format!(
        "tensor `{name}` has dtype {d:?}; supported: F32, F16, BF16 (convert the checkpoint, \
         e.g. `model.to(torch.float32).save_pretrained(dir)`)"
    )
}

impl TensorFile {
    /// Opens and maps `path` and checks its header (offsets inside the file, sizes matching
    /// shapes and dtypes).
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: mapped read-only; the file must not be modified while the map lives (the
        // hazard every mmap-based loader accepts).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (n, meta) = ::safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
            Error::file(
                path,
                format!(
                    "not a valid safetensors file ({e}); is it truncated or still downloading?"
                ),
            )
        })?;
        let header_end = 8 + n;
        let mut tensors: Vec<StoredTensor> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| StoredTensor {
                name,
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: header_end + info.data_offsets.0,
                len: info.data_offsets.1 - info.data_offsets.0,
            })
            .collect();
        tensors.sort_by(|a, b| (a.start, &a.name).cmp(&(b.start, &b.name)));
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(TensorFile {
            path: path.to_path_buf(),
            file,
            map,
            header_end,
            tensors,
            index,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the first data byte (8 + header length).
    pub fn header_end(&self) -> usize {
        self.header_end
    }

    /// The `__metadata__` map (empty if none).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[StoredTensor] {
        &self.tensors
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The first of `names` that the file holds; an error naming the file and the first name
    /// otherwise.
    pub fn find<S: AsRef<str>>(&self, names: &[S]) -> Result<&StoredTensor> {
        names
            .iter()
            .find_map(|n| self.get(n.as_ref()))
            .ok_or_else(|| {
                let tried: Vec<&str> = names.iter().map(|n| n.as_ref()).collect();
                Error::file(
                    &self.path,
                    format!(
                        "missing tensor `{}`{}; is this a checkpoint of another model?",
                        tried.first().copied().unwrap_or(""),
                        if tried.len() > 1 {
                            format!(" (also tried {})", tried[1..].join(", "))
                        } else {
                            String::new()
                        }
                    ),
                )
            })
    }

    /// The stored bytes of `t` (a tensor of this file), from the map.
    pub fn bytes(&self, t: &StoredTensor) -> &[u8] {
        &self.map[t.start..t.start + t.len]
    }

    /// The whole map (for using f32 data in place).
    pub fn map(&self) -> &memmap2::Mmap {
        &self.map
    }

    /// The map, keeping it alive past this reader.
    pub fn into_map(self) -> memmap2::Mmap {
        self.map
    }

    /// Reads `buf.len()` bytes at absolute offset `start` with a file read (not through the
    /// map), for streaming a tensor in chunks; `what` names the part read in the error.
    pub fn read_at(&self, start: usize, buf: &mut [u8], what: &str) -> Result<()> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(start as u64))
            .and_then(|_| f.read_exact(buf))
            .map_err(|e| {
                Error::file(
                    &self.path,
                    format!("reading {what}: {e}; is the file truncated?"),
                )
            })
    }

    /// Converts the tensor `t` into `dst`, checking that its shape is `shape`; `op` names the
    /// caller in a shape error.
    pub fn read_f32_into(&self, t: &StoredTensor, shape: &[usize], dst: &mut [f32]) -> Result<()> {
        if t.shape != shape {
            return Err(Error::shape(
                "load",
                format!("{}: tensor `{}` {:?}", self.path.display(), t.name, t.shape),
                format!("expected {shape:?}"),
            ));
        }
        debug_assert_eq!(dst.len(), t.numel());
        to_f32(t.dtype, self.bytes(t), dst, &t.name, &self.path)
    }

    /// The tensor called `name` as f32, with its shape.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.find(&[name])?;
        let mut out = vec![0.0; t.numel()];
        self.read_f32_into(t, &t.shape, &mut out)?;
        Ok((t.shape.clone(), out))
    }
}

/// Serialises f32 tensors `(name, shape, data)` as safetensors bytes, in the given order, with
/// `metadata` in the header (`"format": "pt"` added unless present, as `transformers` expects).
pub fn serialize_f32(
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let raw: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, data)| data.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&raw)
        .map(|((name, shape, data), bytes)| {
            if shape.iter().product::<usize>() != data.len() {
                return Err(Error::shape(
                    "serialize_f32",
                    format!("tensor `{name}` shape {shape:?}"),
                    format!("{} values", data.len()),
                ));
            }
            ::safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::usage("serialize_f32", format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta: BTreeMap<String, String> = metadata.into_iter().collect();
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    let bytes = ::safetensors::serialize(views, None)
        .map_err(|e| Error::usage("serialize_f32", e.to_string()))?;
    with_sorted_metadata(bytes, &meta)
}

/// Puts `meta` into the header of safetensors `bytes` written without metadata, keys sorted.
///
/// Why: the `safetensors` crate takes the metadata as a `HashMap` and writes it in the map's
/// (randomly seeded) iteration order, so two identical runs would write different bytes. The
/// crate orders the tensors itself (by dtype, then name); only the metadata needs help. It is
/// spliced in as the header's first entry, where the crate puts it, and the header re-padded
/// with spaces to a multiple of 8 bytes.
fn with_sorted_metadata(bytes: Vec<u8>, meta: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let bad = || Error::usage("serialize_f32", "unexpected safetensors header layout");
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let header_end = usize::try_from(n)
        .map_err(|_| bad())?
        .checked_add(8)
        .ok_or_else(bad)?;
    let header = std::str::from_utf8(bytes.get(8..header_end).ok_or_else(bad)?)
        .map_err(|_| bad())?
        .trim_end_matches(' ');
    let rest = header.strip_prefix('{').ok_or_else(bad)?;
    let meta_json =
        serde_json::to_string(meta).map_err(|e| Error::usage("serialize_f32", e.to_string()))?;
    let sep = if rest == "}" { "" } else { "," };
    let mut new_header = format!("{{\"__metadata__\":{meta_json}{sep}{rest}").into_bytes();
    new_header.resize(new_header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + new_header.len() + bytes.len() - header_end);
    out.extend_from_slice(&(new_header.len() as u64).to_le_bytes());
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&bytes[header_end..]);
    Ok(out)
}

/// [`serialize_f32`] written atomically to `path`.
pub fn write_f32(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<()> {
    super::atomic::write_atomic(path, &serialize_f32(tensors, metadata)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_dtypes_metadata_and_errors_naming_file_and_tensor() {
        let dir = std::env::temp_dir().join(format!("gpt-io-st-{}", std::process::id()));
        let path = dir.join("t.safetensors");
        let a = [1.0f32, -2.5, 3.25, 0.0, 7.0, 8.0];
        let meta = [("step".to_string(), "4".to_string())]
            .into_iter()
            .collect();
        write_f32(
            &path,
            &[
                ("a".into(), vec![2, 3], &a[..]),
                ("b".into(), vec![1], &[9.0][..]),
            ],
            meta,
        )
        .unwrap();
        let f = TensorFile::open(&path).unwrap();
        assert_eq!(f.metadata()["step"], "4");
        assert_eq!(f.metadata()["format"], "pt");
        assert_eq!(f.read_f32("a").unwrap(), (vec![2, 3], a.to_vec()));
        let t = f.get("a").unwrap().clone();
        assert_eq!((t.start, t.len), (f.header_end(), 24));
        let mut buf = [0u8; 4];
        f.read_at(t.start + 4, &mut buf, "a[1]").unwrap();
        assert_eq!(f32::from_le_bytes(buf), -2.5);
        assert_eq!(f.find(&["zz", "b"]).unwrap().name, "b");
        let err = f.find(&["missing"]).unwrap_err().to_string();
        assert!(
            err.contains("t.safetensors") && err.contains("`missing`"),
            "{err}"
        );
        let err = f
            .read_f32_into(&t, &[3, 2], &mut [0.0; 6])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`a`") && err.contains("[3, 2]"), "{err}");
        // F16 and BF16 convert.
        let mut out = [0.0f32; 2];
        let h: Vec<u8> = [1.5f32, -0.25]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        to_f32(Dtype::F16, &h, &mut out, "h", &path).unwrap();
        assert_eq!(out, [1.5, -0.25]);
        let b: Vec<u8> = [2.0f32, 0.5]
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        to_f32(Dtype::BF16, &b, &mut out, "b", &path).unwrap();
        assert_eq!(out, [2.0, 0.5]);
        let err = to_f32(Dtype::I64, &[0; 8], &mut out, "ids", &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ids`") && err.contains("I64"), "{err}");
        // A truncated file names itself.
        std::fs::write(&path, &std::fs::read(&path).unwrap()[..20]).unwrap();
        let err = TensorFile::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("t.safetensors") && err.contains("not a valid"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
