//! Token files: the output of `gpt prepare`, memory-mapped by training.
//!
//! Layout (little-endian): magic `b"GPTTOKS\0"` (8 bytes), version `u32` (= 1), bytes per token
//! `u32` (2 for u16 when the vocabulary fits, else 4), token count `u64`, then the tokens.

use crate::error::{Error, Result};
use crate::io::write_atomic;
use std::path::{Path, PathBuf};

/// The file magic.
pub const MAGIC: &[u8; 8] = b"GPTTOKS\0";
/// The current format version.
pub const VERSION: u32 = 1;
/// Header size in bytes.
pub const HEADER: usize = 24;

/// Serialises `tokens` with the smallest width that holds ids below `vocab_size`.
pub fn encode_token_file(tokens: &[u32], vocab_size: usize) -> Vec<u8> {
    let width: u32 = if vocab_size <= 1 << 16 { 2 } else { 4 };
    let mut out = Vec::with_capacity(HEADER + tokens.len() * width as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    for &t in tokens {
        if width == 2 {
            out.extend_from_slice(&(t as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
    out
}

/// Writes a token file atomically.
pub fn write_token_file(path: &Path, tokens: &[u32], vocab_size: usize) -> Result<()> {
    write_atomic(path, &encode_token_file(tokens, vocab_size))
}

/// A memory-mapped token file.
pub struct TokenFile {
    path: PathBuf,
    map: memmap2::Mmap,
    width: usize,
    len: usize,
}

impl TokenFile {
    /// Opens and validates a token file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: mapped read-only; the trainer never writes token files while they are mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bad = |why: String| {
            Error::file(
                path,
                format!("bad token file header: {why} (re-run `gpt prepare`)"),
            )
        };
        if map.len() < HEADER {
            return Err(bad(format!(
                "file is {} bytes, shorter than the {HEADER}-byte header",
                map.len()
            )));
        }
        if &map[..8] != MAGIC {
            return Err(bad("wrong magic".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes([map[i], map[i + 1], map[i + 2], map[i + 3]]);
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(format!(
                "version {version}, this build reads {VERSION}"
            )));
        }
        let width = u32_at(12) as usize;
        if width != 2 && width != 4 {
            return Err(bad(format!("token width {width} bytes (expected 2 or 4)")));
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&map[16..24]);
        let count = u64::from_le_bytes(c);
        // Checked: a damaged count (say 2^62) must be this error, not an overflow.
        let body = map.len() - HEADER;
        let len = usize::try_from(count).unwrap_or(usize::MAX);
        if len.checked_mul(width) != Some(body) {
            return Err(bad(format!(
                "header says {count} tokens but the file holds {body} bytes of tokens"
            )));
        }
        Ok(TokenFile {
            path: path.to_path_buf(),
            map,
            width,
            len,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token `i` (must be `< len`).
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        let o = HEADER + i * self.width;
        let m = &self.map;
        if self.width == 2 {
            u16::from_le_bytes([m[o], m[o + 1]]) as u32
        } else {
            u32::from_le_bytes([m[o], m[o + 1], m[o + 2], m[o + 3]])
        }
    }

    /// Copies tokens `start..start + out.len()` into `out`.
    pub fn read(&self, start: usize, out: &mut [u32]) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = self.get(start + k);
        }
    }

    /// Largest token id (a full scan; used to validate against the model's vocabulary).
    pub fn max_id(&self) -> u32 {
        (0..self.len).map(|i| self.get(i)).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_bad_headers() {
        let dir = std::env::temp_dir().join(format!("gpt-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for vocab in [65, 100_000] {
            let p = dir.join(format!("t{vocab}.bin"));
            let toks: Vec<u32> = (0..1000).map(|i| (i * 7 % 65) as u32).collect();
            write_token_file(&p, &toks, vocab).unwrap();
            let f = TokenFile::open(&p).unwrap();
            assert_eq!(f.len(), 1000);
            let mut buf = vec![0; 10];
            f.read(990, &mut buf);
            assert_eq!(buf, toks[990..]);
        }
        let p = dir.join("bad.bin");
        std::fs::write(&p, b"nonsense").unwrap();
        let err = TokenFile::open(&p).err().unwrap().to_string();
        assert!(err.contains("bad.bin") && err.contains("header"), "{err}");
        let mut bytes = encode_token_file(&[1, 2, 3], 10);
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&p, &bytes).unwrap();
        assert!(TokenFile::open(&p)
            .err()
            .unwrap()
            .to_string()
            .contains("3 tokens"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_token_count_that_overflows_is_an_error_not_a_panic() {
        // Found by tests/fuzz_parsers.rs: `HEADER + len * width` overflowed.
        let dir = std::env::temp_dir().join(format!("gpt-tokens-ovf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("huge.bin");
        for count in [1u64 << 62, u64::MAX, (1 << 63) + 1] {
            let mut bytes = encode_token_file(&[], 10);
            bytes[16..24].copy_from_slice(&count.to_le_bytes());
            std::fs::write(&p, &bytes).unwrap();
            let err = TokenFile::open(&p).err().unwrap().to_string();
            assert!(
                err.contains("huge.bin") && err.contains(&format!("{count} tokens")),
                "{err}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
