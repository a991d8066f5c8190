//! Who owns the other end of a loopback TCP connection: the kernel's socket
//! table, asked over netlink `sock_diag` (`inet_diag`, what `ss -tnpe` shows as
//! `uid:`). A Unix socket has `SO_PEERCRED`; TCP has no such option, but when both
//! ends are on this host the peer's socket is in the same table, with the uid
//! that created it.
//!
//! One exact lookup per accepted connection: the peer's socket is the one whose
//! local end is the connection's remote address and whose remote end is its
//! local address. The answer is checked against what was asked (same ports and
//! addresses, not a listening socket) so that a socket that closed in between,
//! or a listener on the same port, is never taken for the peer: then the uid is
//! unknown, and a listener with `allowed_uids` refuses.
//!
//! Crates: `netlink-packet-sock-diag` (message types), `netlink-packet-core`
//! (framing) and `netlink-sys` (the socket), from the rust-netlink project that
//! also maintains `rtnetlink`. Their own dependencies (zerocopy, bitflags,
//! smallvec, libc, log) were already in the tree; the three crates themselves
//! took 4.6 s to build (debug, `cargo build -p netlink-packet-sock-diag -p
//! netlink-sys` after `cargo clean -p` of the three, on the shared 2-core
//! machine at load 17). Hand-writing the two structs was the alternative; the
//! crates also check lengths on the way in. `unsafe_code = "forbid"` holds for
//! this crate (the socket calls are `netlink-sys`'s).

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

/// TCP_LISTEN in the kernel's state numbering.
const TCP_LISTEN: u8 = 10;

/// A netlink socket for `sock_diag` lookups (one per accept loop).
pub struct Diag {
    socket: Socket,
    buf: Vec<u8>,
}

impl Diag {
    /// Opens the netlink socket. Fails where netlink is not allowed (a seccomp
    /// profile, an old kernel): then every TCP peer's uid is unknown.
    pub fn open() -> std::io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        // The kernel answers a sock_diag request before `send` returns; a reply
        // that is not there at once is not coming.
        socket.set_non_blocking(true)?;
        Ok(Self {
            socket,
            buf: vec![0; 8192],
        })
    }

    /// The uid owning the socket at `peer` that is connected to `local`, when
    /// this host has it.
    pub fn peer_uid(&mut self, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
        let (local, peer) = (canonical(local), canonical(peer));
        if local.is_ipv4() != peer.is_ipv4() {
            return None;
        }
        self.lookup(local, peer)
    }

    fn lookup(&mut self, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
        let family = if peer.is_ipv4() { AF_INET } else { AF_INET6 };
        let want = SocketId {
            source_port: peer.port(),
            destination_port: local.port(),
            source_address: peer.ip(),
            destination_address: local.ip(),
            interface_id: 0,
            // INET_DIAG_NOCOOKIE: match by address and port only.
            cookie: [0xff; 8],
        };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        let mut msg = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: want.clone(),
            })
            .into(),
        );
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        // `serialize` needs exactly `buffer_len` bytes, which `out` has.
        msg.serialize(&mut out);
        // Anything left from an earlier lookup is stale: drop it.
        while self.socket.recv(&mut &mut self.buf[..], 0).is_ok() {}
        self.socket.send(&out, 0).ok()?;
        let n = self.socket.recv(&mut &mut self.buf[..], 0).ok()?;
        let reply = NetlinkMessage::<SockDiagMessage>::deserialize(self.buf.get(..n)?).ok()?;
        match reply.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                let got = &r.header.socket_id;
                let same = got.source_port == want.source_port
                    && got.destination_port == want.destination_port
                    && got.source_address == want.source_address
                    && got.destination_address == want.destination_address;
                (same && r.header.state != TCP_LISTEN).then_some(r.header.uid)
            }
            _ => None,
        }
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 peer)
/// as the IPv4 address the peer's own socket has.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel names the owner of a loopback connection's peer socket: this
    /// process (its effective uid), and nobody for a socket that is not there.
    #[test]
    fn the_kernel_names_the_peer_of_a_loopback_connection() {
        let Ok(mut diag) = Diag::open() else {
            eprintln!("SKIP: no sock_diag netlink here");
            return;
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(diag.peer_uid(server.local_addr().unwrap(), peer), Some(me));
        // Asked the other way round, the socket found is the server's own end:
        // the lookup is by exact addresses, ports and direction.
        assert_eq!(diag.peer_uid(peer, server.local_addr().unwrap()), Some(me));
        let gone = SocketAddr::new(peer.ip(), 1);
        assert_eq!(diag.peer_uid(server.local_addr().unwrap(), gone), None);
        // A listening socket on the peer's port is not a peer.
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fake_peer = other.local_addr().unwrap();
        assert_eq!(diag.peer_uid(server.local_addr().unwrap(), fake_peer), None);
        drop(client);
    }

    #[test]
    fn mapped_addresses_are_unmapped() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:5".parse().unwrap());
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
