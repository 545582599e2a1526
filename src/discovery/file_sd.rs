//! The file_sd format and writing it so that Prometheus never reads half a file.
//!
//! Prometheus watches the directory and rereads a file when it changes; a file that does not
//! parse is rejected and the previous targets are kept, but a truncated file can still parse
//! (`[]` is valid). So the file is never written in place: the content goes to a temp file in the
//! same directory (same filesystem, so the rename is atomic), is fsynced, gets mode 0644, and is
//! renamed over the old one; then the directory is fsynced so the rename survives a crash. The
//! temp name does not end in `.json`, so a `*.json` file_sd pattern never matches it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One target group: addresses sharing the same labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// The file's bytes: pretty JSON with a final newline, so that `diff` and humans can read it.
pub fn to_bytes(groups: &[TargetGroup]) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(groups).expect("target groups serialize");
    out.push(b'\n');
    out
}

/// What happened to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The content changed and was replaced atomically.
    Replaced,
    /// The file already held exactly this content; nothing was touched.
    Unchanged,
}

/// Writes `content` to `path` atomically unless the file already holds it. Creates the
/// directory when missing.
pub fn write_if_changed(path: &Path, content: &[u8]) -> io::Result<Written> {
    match fs::read(path) {
        Ok(current) if current == content => return Ok(Written::Unchanged),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    write_atomic(path, content)?;
    Ok(Written::Replaced)
}

/// Temp file in the same directory, fsync, mode 0644, rename, fsync the directory.
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, content, 0o644)
}

/// [`write_atomic`] with the file's mode (0600 for a file holding secrets): a reader sees the
/// old file or the whole new one, never a part.
pub fn write_atomic_mode(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the output has no file name"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        // The umask may have taken bits away; Prometheus may run as another user.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_creates_the_directory_and_skips_identical_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/config.json");
        assert_eq!(write_if_changed(&path, b"[]\n").unwrap(), Written::Replaced);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            write_if_changed(&path, b"[]\n").unwrap(),
            Written::Unchanged
        );
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        assert_eq!(
            write_if_changed(&path, b"[ ]\n").unwrap(),
            Written::Replaced
        );
        assert_eq!(fs::read(&path).unwrap(), b"[ ]\n");
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write_atomic(&path, b"[]\n").unwrap();
        // A directory where the file should be makes the rename fail.
        let blocked = dir.path().join("blocked.json");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"x").unwrap();
        assert!(write_atomic(&blocked, b"[]\n").is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        assert_eq!(fs::read(&path).unwrap(), b"[]\n");
    }
}
