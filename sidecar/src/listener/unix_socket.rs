//! Unix-socket listener paths shared by the sidecar's API and the database proxies.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// What to do when the socket's directory `dir` is unusable, said by every refusal.
fn dir_hint(dir: &Path) -> String {
    format!(
        "create it first (mkdir -m 0750 {}, or RuntimeDirectory=s2iam in a systemd unit, \
         or an emptyDir volume in a pod), or choose another path with --socket or listen.socket \
         (as a non-root user, e.g. $XDG_RUNTIME_DIR/s2iam.sock)",
        dir.display()
    )
}

/// Whether a socket can be bound at `path` as far as its directory goes: it must
/// exist, be a directory, and be writable and searchable by this process (real
/// uid, as `access(2)` asks). The one validator for `serve --check` and for
/// binding, so the check passes exactly what the start accepts.
///
/// The directory is never created: a sidecar running as root that made
/// `/run/s2iam` silently would hide a missing `RuntimeDirectory=` or volume, and
/// one running as a user could not make it anyway. The error names the
/// directory and says what to do.
pub fn check_socket_dir(path: &Path) -> std::io::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let hint = dir_hint(dir);
    let refuse = |kind, what: String| Err(std::io::Error::new(kind, format!("{what}: {hint}")));
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => refuse(
            e.kind(),
            format!("the socket's directory {} does not exist", dir.display()),
        ),
        Err(e) => refuse(
            e.kind(),
            format!("cannot use the socket's directory {}: {e}", dir.display()),
        ),
        Ok(meta) if !meta.is_dir() => refuse(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ),
        Ok(_) => {
            use nix::unistd::AccessFlags;
            match nix::unistd::access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
                Ok(()) => Ok(()),
                Err(e) => refuse(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "the socket's directory {} is not writable by this user (uid {}): {e}",
                        dir.display(),
                        nix::unistd::getuid()
                    ),
                ),
            }
        }
    }
}

/// Makes `path` ready to bind: checks its directory ([`check_socket_dir`]),
/// replaces a stale socket file left by a crashed process, refuses a live socket
/// or a path that is not a socket.
pub async fn prepare_socket_path(path: &Path) -> std::io::Result<()> {
    check_socket_dir(path)?;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; refusing to replace it",
        ));
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another process is serving on this socket",
        )),
        Err(_) => {
            tracing::info!(socket = %path.display(), "replacing stale socket file");
            std::fs::remove_file(path)
        }
    }
}
