//! Atomic file writes, for token sinks, rendered templates and the AWS
//! authorization token file.
//!
//! Every write is atomic — a temporary file in the same directory, created with
//! `O_EXCL|O_NOFOLLOW`, given its mode and owner, `fsync`ed, then `rename`d over
//! the target — so a reader polling the file sees the old contents or the new,
//! never a mix, and never a file with the wrong mode or owner. A symlink planted at
//! the destination is refused, not followed or replaced, and so is a symlink in
//! any directory on the way below the root (`/`, or a template's `root`): each
//! directory is opened with `O_NOFOLLOW` from its parent's descriptor and the
//! file is created and renamed with `openat`/`renameat` in the last one, so a
//! directory swapped for a symlink mid-write is not followed either. A missing
//! directory is created (mode 0750) when its own parent exists; a deeper
//! missing path is an error, since it usually means a typo or a volume that is
//! not mounted.
//!
//! Written against `std` rather than `tempfile`'s `persist`: the temporary file must
//! get its mode and owner before it becomes visible, the destination's symlink check
//! and the `fsync` of file and directory are needed either way, and `tempfile`'s
//! random names and cleanup-on-drop add nothing once those are done by hand.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};

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

/// Writes `contents` to `path` atomically with `mode`, no symlink on the way.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    write_file(path, contents, &FileOptions::mode(mode))
}

/// Writes `contents` to `path` atomically with the mode and owner of `opts`,
/// with no symlink anywhere on the path ([`write_file_under`] with root `/`).
pub fn write_file(path: &Path, contents: &[u8], opts: &FileOptions) -> std::io::Result<()> {
    write_file_under(Path::new("/"), path, contents, opts)
}

/// Writes `contents` to `path`, which must lie below `root`, atomically with the
/// mode and owner of `opts`. `root` is opened as given (it may itself be, or
/// pass through, a symlink: the administrator chose it); every directory below
/// it is opened with `O_NOFOLLOW` from its parent's descriptor, and the file is
/// created and renamed in the last one with `openat`/`renameat`, so a symlink
/// planted anywhere below `root`, even while the write runs, is refused and
/// never followed.
pub fn write_file_under(
    root: &Path,
    path: &Path,
    contents: &[u8],
    opts: &FileOptions,
) -> std::io::Result<()> {
    let (dir, name) = split(path)?;
    let dir_fd = open_dir(root, &dir, Missing::Create)?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "directory vanished"))?;
    refuse_symlink(&dir_fd, &name, path)?;
    let tmp = format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        rand::random::<u32>()
    );
    let result = write_tmp_and_rename(&dir_fd, &tmp, &name, contents, opts);
    if result.is_err() {
        let _ = nix::unistd::unlinkat(
            &dir_fd,
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    result
}

fn write_tmp_and_rename(
    dir_fd: &OwnedFd,
    tmp: &str,
    name: &str,
    contents: &[u8],
    opts: &FileOptions,
) -> std::io::Result<()> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir_fd, tmp, flags, Mode::from_bits_truncate(opts.mode)).map_err(io)?;
    let mut f = std::fs::File::from(fd);
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
    nix::fcntl::renameat(dir_fd, tmp, dir_fd, name).map_err(io)?;
    // Make the rename itself durable.
    if let Ok(d) = dir_fd.try_clone() {
        let _ = std::fs::File::from(d).sync_all();
    }
    Ok(())
}

/// Checks, without writing, that `path` could be written: every directory
/// below `/` is a real directory (no symlink), the last one exists or can be
/// created, and nothing but a regular file is at the destination. For
/// `--check` and start-up.
pub fn check_destination(path: &Path) -> Result<(), String> {
    check_destination_under(Path::new("/"), path)
}

/// [`check_destination`] below `root` (see [`write_file_under`]).
pub fn check_destination_under(root: &Path, path: &Path) -> Result<(), String> {
    let (dir, name) = split(path).map_err(|e| e.to_string())?;
    match open_dir(root, &dir, Missing::Allow).map_err(|e| e.to_string())? {
        Some(fd) => refuse_symlink(&fd, &name, path).map_err(|e| e.to_string()),
        None => Ok(()),
    }
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

/// What to do when the last level of the directory is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Create it with [`DIR_MODE`].
    Create,
    /// Answer `None` (it could be created).
    Allow,
}

/// Opens `dir` below `root`: `root` as given, then one component at a time with
/// `O_NOFOLLOW|O_DIRECTORY` from the parent's descriptor. A missing last level is
/// created (or allowed, per `missing`); a deeper missing path is an error.
fn open_dir(root: &Path, dir: &Path, missing: Missing) -> std::io::Result<Option<OwnedFd>> {
    let (start, below) = if dir.is_absolute() {
        let below = dir.strip_prefix(root).map_err(|_| {
            invalid(format!(
                "{} is not below {} (the directory s2iam trusts as given)",
                dir.display(),
                root.display()
            ))
        })?;
        (root, below)
    } else {
        (Path::new("."), dir)
    };
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut fd = nix::fcntl::open(start, dir_flags, Mode::empty())
        .map_err(|e| invalid_io(e, format!("cannot open directory {}", start.display())))?;
    let names: Vec<&std::ffi::OsStr> = below
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::CurDir => None,
            _ => Some(Err(())),
        })
        .collect::<Result<_, _>>()
        .map_err(|()| invalid(format!("{} has a \"..\" component", dir.display())))?;
    let mut walked = start.to_path_buf();
    for (i, name) in names.iter().enumerate() {
        walked.push(name);
        let last = i.saturating_add(1) == names.len();
        match openat(&fd, *name, dir_flags | OFlag::O_NOFOLLOW, Mode::empty()) {
            Ok(next) => fd = next,
            Err(Errno::ENOENT) if last && missing == Missing::Allow => return Ok(None),
            Err(Errno::ENOENT) if last => fd = create_dir(&fd, name, &walked)?,
            Err(Errno::ENOENT) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "directory {} does not exist, nor does its parent (s2iam creates only the last level)",
                        dir.display()
                    ),
                ))
            }
            Err(e) => return Err(not_a_dir(&fd, name, &walked, e)),
        }
    }
    Ok(Some(fd))
}

/// Why `name` in `parent` could not be opened as a directory: a symlink (named
/// as such), something else, or the error itself.
fn not_a_dir(parent: &OwnedFd, name: &std::ffi::OsStr, walked: &Path, e: Errno) -> std::io::Error {
    match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => invalid(format!(
            "{} is a symlink: s2iam follows none below the root (write to the real path, or set the template's root to trust it)",
            walked.display()
        )),
        Ok(_) if e == Errno::ENOTDIR => invalid(format!("{} is not a directory", walked.display())),
        _ => invalid_io(e, format!("cannot open directory {}", walked.display())),
    }
}

/// Creates `name` in `parent` with [`DIR_MODE`] and opens it (no symlink).
fn create_dir(parent: &OwnedFd, name: &std::ffi::OsStr, walked: &Path) -> std::io::Result<OwnedFd> {
    match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(DIR_MODE)) {
        Ok(()) => {
            tracing::info!(dir = %walked.display(), mode = format!("{DIR_MODE:o}"), "created the sink directory");
        }
        Err(Errno::EEXIST) => {}
        Err(e) => {
            return Err(invalid_io(
                e,
                format!("cannot create directory {}", walked.display()),
            ))
        }
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let fd = openat(parent, name, flags, Mode::empty())
        .map_err(|e| not_a_dir(parent, name, walked, e))?;
    // The umask may have narrowed the mode given to mkdir(2).
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(DIR_MODE)).map_err(io)?;
    Ok(fd)
}

/// Refuses a symlink or a directory at `name` in `dir`.
fn refuse_symlink(dir: &OwnedFd, name: &str, path: &Path) -> std::io::Result<()> {
    let Ok(st) = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
        return Ok(());
    };
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFLNK => Err(invalid(format!(
            "{} is a symlink: refusing to write through or replace it",
            path.display()
        ))),
        SFlag::S_IFDIR => Err(invalid(format!("{} is a directory", path.display()))),
        _ => Ok(()),
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

fn invalid_io(e: Errno, context: String) -> std::io::Error {
    let e = std::io::Error::from(e);
    std::io::Error::new(e.kind(), format!("{context}: {e}"))
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
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
    fn never_follows_a_symlinked_directory_below_the_root() {
        let dir = temp();
        let elsewhere = dir.join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("sub")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("link")).unwrap();
        for path in [
            dir.join("link/token"),
            dir.join("link/sub/token"),
            dir.join("link/new/token"),
        ] {
            let err = write_atomic(&path, b"secret", 0o600).unwrap_err();
            assert!(err.to_string().contains("link is a symlink"), "{err}");
            assert!(check_destination(&path)
                .unwrap_err()
                .contains("is a symlink"));
        }
        assert!(!elsewhere.join("new").exists() && !elsewhere.join("token").exists());
        // Trusted when it is the root itself; still not below it.
        let opts = FileOptions::mode(0o600);
        write_file_under(&dir.join("link"), &dir.join("link/sub/token"), b"ok", &opts).unwrap();
        assert_eq!(
            std::fs::read_to_string(elsewhere.join("sub/token")).unwrap(),
            "ok"
        );
        std::os::unix::fs::symlink(&elsewhere, elsewhere.join("loop")).unwrap();
        let err =
            write_file_under(&dir.join("link"), &dir.join("link/loop/t"), b"x", &opts).unwrap_err();
        assert!(err.to_string().contains("loop is a symlink"), "{err}");
        let err =
            write_file_under(&dir.join("link"), &dir.join("other/t"), b"x", &opts).unwrap_err();
        assert!(err.to_string().contains("is not below"), "{err}");
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
