//! Unix-socket listener paths shared by the sidecar's API and the database proxies.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Makes `path` ready to bind: creates its directory, replaces a stale socket
/// file left by a crashed process, refuses a live socket or a path that is not
/// a socket.
pub async fn prepare_socket_path(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Not the umask's choice (0777 under umask 000): owner and group only.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
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
