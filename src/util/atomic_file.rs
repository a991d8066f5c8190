//! Atomic file writes, for token sinks, rendered templates and the AWS
//! authorization token file.
//!
//! Every write is atomic — a temporary file in the same directory, created with
//! `O_EXCL|O_NOFOLLOW`, given its mode and owner, `fsync`ed, then `rename`d over
//! the target — so a reader polling the file sees the old contents or the new,
//! never a mix, and never a file with the wrong mode or owner. A symlink planted at
//! the destination is refused, not followed or replaced. A missing directory is
//! created (mode 0750) when its own parent exists; a deeper missing path is an
//! error, since it usually means a typo or a volume that is not mounted.
//!
//! Written against `std` rather than `tempfile`'s `persist`: the temporary file must
//! get its mode and owner before it becomes visible, the destination's symlink check
//! and the `fsync` of file and directory are needed either way, and `tempfile`'s
//! random names and cleanup-on-drop add nothing once those are done by hand.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a directory created for a sink: the owner writes, the group reads.
pub const DIR_MODE: u32 = 0o750;

/// How a sink file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    /// The file's mode.
    pub mode: u32,
    /// Numeric owner and group (names are resolved when the config is loaded);
    /// `None`: the writer's.
    pub owner: Option<u32>,
    /// See `owner`.
    pub group: Option<u32>,
}

impl FileOptions {
    /// A mode, the writer's owner and group.
    pub fn mode(mode: u32) -> Self {
        Self {
            mode,
            owner: None,
            group: None,
        }
    }
}

/// Writes `contents` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    write_file(path, contents, &FileOptions::mode(mode))
}

/// Writes `contents` to `path` atomically with the mode and owner of `opts`.
pub fn write_file(path: &Path, contents: &[u8], opts: &FileOptions) -> std::io::Result<()> {
    let (dir, name) = split(path)?;
    ensure_dir(&dir)?;
    refuse_symlink(path)?;
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(opts.mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        if opts.owner.is_some() || opts.group.is_some() {
            std::os::unix::fs::fchown(&f, opts.owner, opts.group).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot give it owner {} and group {}: {e}",
                        show(opts.owner),
                        show(opts.group)
                    ),
                )
            })?;
        }
        // After chown (which clears set-id bits), and because the umask may have
        // narrowed the mode given to open(2).
        f.set_permissions(std::fs::Permissions::from_mode(opts.mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Checks, without writing, that `path` could be written: its directory exists or
/// can be created, and nothing but a regular file is at the destination. For
/// `--check` and start-up.
pub fn check_destination(path: &Path) -> Result<(), String> {
    let (dir, _) = split(path).map_err(|e| e.to_string())?;
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(_) => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            if !parent.is_some_and(Path::is_dir) {
                return Err(format!(
                    "directory {} does not exist, nor does its parent (s2iam creates only the last level)",
                    dir.display()
                ));
            }
        }
    }
    refuse_symlink(path).map_err(|e| e.to_string())
}

fn split(path: &Path) -> std::io::Result<(PathBuf, String)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path
        .file_name()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "sink path has no file name",
            )
        })?
        .to_string_lossy()
        .into_owned();
    Ok((dir, name))
}

/// Creates the last level of `dir` with [`DIR_MODE`] if it is missing.
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    match builder.create(dir) {
        Ok(()) => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
            tracing::info!(dir = %dir.display(), mode = format!("{DIR_MODE:o}"), "created the sink directory");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("cannot create directory {}: {e}", dir.display()),
        )),
    }
}

fn refuse_symlink(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is a symlink: refusing to write through or replace it",
                path.display()
            ),
        )),
        Ok(m) if m.is_dir() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is a directory", path.display()),
        )),
        _ => Ok(()),
    }
}

fn show(id: Option<u32>) -> String {
    id.map_or_else(|| "(unchanged)".into(), |i| i.to_string())
}

/// A user given by name or number, as a uid.
pub fn resolve_user(text: &str) -> Result<u32, String> {
    if let Ok(uid) = text.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("no user named {text:?}")),
        Err(e) => Err(format!("cannot look up user {text:?}: {e}")),
    }
}

/// A group given by name or number, as a gid.
pub fn resolve_group(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("no group named {text:?}")),
        Err(e) => Err(format!("cannot look up group {text:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("s2iam-sink-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_with_mode_and_leaves_no_temp_files() {
        let dir = temp();
        let path = dir.join("token");
        write_atomic(&path, b"one", 0o640).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert!(write_atomic(&dir.join("missing/deeper/token"), b"x", 0o600).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn creates_one_missing_directory_level_with_a_safe_mode() {
        let dir = temp();
        let path = dir.join("tokens/db");
        assert!(check_destination(&path).is_ok());
        assert!(check_destination(&dir.join("a/b/db")).is_err());
        write_atomic(&path, b"x", 0o640).unwrap();
        let mode = std::fs::metadata(dir.join("tokens")).unwrap().mode() & 0o777;
        assert_eq!(mode, DIR_MODE);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn never_follows_a_symlink_at_the_destination() {
        let dir = temp();
        let target = dir.join("elsewhere");
        std::fs::write(&target, "precious").unwrap();
        let path = dir.join("token");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = write_atomic(&path, b"secret", 0o600).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(check_destination(&path).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sets_owner_and_group_by_number_and_name() {
        let dir = temp();
        let path = dir.join("token");
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let opts = FileOptions {
            mode: 0o640,
            owner: Some(uid),
            group: Some(gid),
        };
        write_file(&path, b"x", &opts).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid));
        if uid == 0 {
            // Root can give the file away: the point of owner/group.
            let opts = FileOptions {
                mode: 0o640,
                owner: Some(65534),
                group: Some(65533),
            };
            write_file(&path, b"y", &opts).unwrap();
            let m = std::fs::metadata(&path).unwrap();
            assert_eq!((m.uid(), m.gid()), (65534, 65533));
            assert_eq!(resolve_user("root").unwrap(), 0);
            assert_eq!(resolve_group("root").unwrap(), 0);
        }
        assert_eq!(resolve_user("1234").unwrap(), 1234);
        assert!(resolve_user("no-such-user-s2iam").is_err());
        assert!(resolve_group("no-such-group-s2iam").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
