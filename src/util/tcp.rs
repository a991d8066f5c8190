//! TCP listeners shared by the sidecar's API, the API proxies and the database
//! proxies: one bind, one "address in use" message saying what to do.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Binds `addr`; "address in use" says who may hold the port and names
/// `setting`, the flag or config key that moves it (e.g. `--tcp or listen.tcp`).
pub async fn bind(addr: SocketAddr, setting: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| in_use_hint(e, addr, setting))
}

/// "Address in use" with what to do about it; other errors unchanged.
pub fn in_use_hint(e: std::io::Error, addr: SocketAddr, setting: &str) -> std::io::Error {
    if e.kind() != std::io::ErrorKind::AddrInUse {
        return e;
    }
    std::io::Error::new(
        e.kind(),
        format!(
            "{e}: another process (another s2iam, or `s2iam dev`?) is listening on port {}; \
             stop it, or choose another port with {setting} (`ss -ltnp` shows who)",
            addr.port()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_names_the_setting_that_moves_it() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr, "--listen").await.unwrap_err().to_string();
        assert!(err.contains("choose another port with --listen"), "{err}");
        assert!(err.contains(&addr.port().to_string()), "{err}");
    }
}
