//! Atomic writes: a file is written to a temporary sibling and renamed over the target; a
//! directory is filled as a temporary sibling and renamed into place. A reader (or a resume after
//! a crash) sees either the old version or the new one, never half of each.
//!
//! Why the syncs: a rename is atomic in the directory, but without `fsync` the file's data may
//! reach the disk after the rename does, so a power loss could leave the new name on an empty
//! or partial file. The temporary file is synced before the rename, and the directory after it
//! (so the rename itself is durable); a directory that cannot be opened for syncing (some
//! platforms and file systems) is not an error.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (temporary file in the same directory, synced, then
/// renamed over `path`, then the directory synced), creating the directory if needed. A path
/// that is a device or a pipe is written directly.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // A device or a pipe (`--out /dev/null`, `--out /dev/stdout`) is written in place: renaming
    // a file over it would replace the device node itself.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| Error::io(path, e));
    }
    let dir = parent(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = dir.join(format!(".{}.tmp.{}", file_name(path), std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    sync_dir(&dir);
    Ok(())
}

/// Syncs a directory's entries (after a rename into it); best effort, see the file comment.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The sibling `dst` is moved to while [`replace_dir`] swaps in a new version (`NAME.old`); a
/// crash between the two renames leaves the previous complete version there.
pub fn old_sibling(dst: &Path) -> PathBuf {
    parent(dst).join(format!("{}.old", file_name(dst)))
}

/// Replaces the directory `dst` by one that `fill` writes: `fill` gets an empty temporary
/// sibling (`NAME.tmp`), which then takes `dst`'s place by renames (`dst` → `NAME.old` →
/// removed). If `fill` fails, `dst` is untouched.
pub fn replace_dir(dst: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = parent(dst);
    let name = file_name(dst);
    let tmp = dir.join(format!("{name}.tmp"));
    let old = old_sibling(dst);
    remove_dir_if_exists(&tmp)?;
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    fill(&tmp)?;
    if dst.exists() {
        remove_dir_if_exists(&old)?;
        std::fs::rename(dst, &old).map_err(|e| Error::io(dst, e))?;
    }
    std::fs::rename(&tmp, dst).map_err(|e| Error::io(&tmp, e))?;
    sync_dir(&dir);
    remove_dir_if_exists(&old)
}

/// Removes a directory tree if it exists.
pub fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

fn parent(path: &Path) -> PathBuf {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_device_is_written_in_place_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let null = Path::new("/dev/null");
        if !null.exists() {
            return;
        }
        write_atomic(null, b"discarded").unwrap();
        let kind = std::fs::metadata(null).unwrap().file_type();
        assert!(kind.is_char_device(), "/dev/null must stay a device");
    }

    #[test]
    fn files_and_directories_are_replaced_whole() {
        let root = std::env::temp_dir().join(format!("gpt-io-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let f = root.join("a/b.txt");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let d = root.join("ckpt");
        replace_dir(&d, |t| write_atomic(&t.join("x"), b"1")).unwrap();
        replace_dir(&d, |t| write_atomic(&t.join("y"), b"2")).unwrap();
        assert!(!d.join("x").exists() && d.join("y").exists());
        // A failing fill leaves the previous version in place.
        let err = replace_dir(&d, |_| Err(Error::usage("fill", "boom"))).unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert!(d.join("y").exists() && !old_sibling(&d).exists());
        let names: Vec<_> = std::fs::read_dir(root.join("a")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary files left behind");
        std::fs::remove_dir_all(&root).ok();
    }
}
