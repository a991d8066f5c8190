//! Files, injected: the real filesystem, or an in-memory one in tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files the sources read (token files, credential files): the real filesystem, or
/// an in-memory one for tests.
#[derive(Clone, Debug)]
pub struct Fs {
    files: Option<Arc<HashMap<PathBuf, String>>>,
}

/// Credential files are small; anything bigger is not one.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

impl Fs {
    /// The real filesystem.
    pub fn real() -> Self {
        Self { files: None }
    }

    /// An in-memory filesystem holding only `files`.
    pub fn from_files<P: Into<PathBuf>, C: Into<String>>(
        files: impl IntoIterator<Item = (P, C)>,
    ) -> Self {
        Self {
            files: Some(Arc::new(
                files
                    .into_iter()
                    .map(|(p, c)| (p.into(), c.into()))
                    .collect(),
            )),
        }
    }

    /// Reads a whole (small, UTF-8) file.
    pub fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        match &self.files {
            Some(files) => files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
            None => {
                let meta = std::fs::metadata(path)?;
                if meta.len() > MAX_FILE_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("larger than {MAX_FILE_BYTES} bytes"),
                    ));
                }
                std::fs::read_to_string(path)
            }
        }
    }

    /// The size of a regular file; an error for anything else (a directory, a FIFO
    /// that would block a read, a device).
    pub fn file_size(&self, path: &Path) -> std::io::Result<u64> {
        match &self.files {
            Some(files) => files
                .get(path)
                .map(|c| u64::try_from(c.len()).unwrap_or(u64::MAX))
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
            None => {
                let meta = std::fs::metadata(path)?;
                if !meta.is_file() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not a regular file",
                    ));
                }
                Ok(meta.len())
            }
        }
    }

    /// Whether `path` is a file.
    pub fn exists(&self, path: &Path) -> bool {
        match &self.files {
            Some(files) => files.contains_key(path),
            None => path.is_file(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_fs() {
        let fs = Fs::from_files([("/t", "tok")]);
        assert_eq!(fs.read_to_string(Path::new("/t")).unwrap(), "tok");
        assert!(fs.read_to_string(Path::new("/u")).is_err());
        assert!(fs.exists(Path::new("/t")));
        assert_eq!(fs.file_size(Path::new("/t")).unwrap(), 3);
        assert!(fs.file_size(Path::new("/u")).is_err());
        assert!(Fs::real().file_size(Path::new("/")).is_err(), "a directory");
    }
}
