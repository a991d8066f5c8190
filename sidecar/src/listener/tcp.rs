//! The "address in use" message of every TCP listener (the sidecar's API, the
//! API proxies, the database proxies): who may hold the port, and what moves it.

use std::net::SocketAddr;

/// "Address in use" with what to do about it, naming `setting` (the flag or
/// config key that moves the port, e.g. `--tcp or listen.tcp`) when not empty;
/// other errors unchanged.
pub fn in_use_hint(e: std::io::Error, addr: SocketAddr, setting: &str) -> std::io::Error {
    if e.kind() != std::io::ErrorKind::AddrInUse {
        return e;
    }
    let with = if setting.is_empty() {
        String::new()
    } else {
        format!(" with {setting}")
    };
    std::io::Error::new(
        e.kind(),
        format!(
            "{e}: another process (another s2iam, or `s2iam dev`?) is listening on port {} \
             (`ss -ltnp` shows who); stop it, or choose another port{with}",
            addr.port()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_the_setting_that_moves_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = std::net::TcpListener::bind(addr).unwrap_err();
        let err = in_use_hint(e, addr, "--listen").to_string();
        assert!(err.contains("choose another port with --listen"), "{err}");
        assert!(err.contains(&addr.port().to_string()), "{err}");
        let other = std::io::Error::other("no");
        assert_eq!(in_use_hint(other, addr, "--listen").to_string(), "no");
    }
}
