//! The caps of a door: connections in total, per peer uid, for refused callers,
//! and the process's file-descriptor budget.
//!
//! Why per uid, and well below the total: the kernel's accept queue is first come
//! first served, so one user holding every place (thousands of idle connections)
//! would make everyone else's health probe wait behind them. With a per-uid cap a
//! flood costs its sender only their own places; every other uid still gets in.
//! Callers the door refuses share a small pool of their own: each gets one answer
//! and is closed, so a handful of places is all they ever need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fds;
use super::Peer;

/// What to do with a connection when the door is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Stop accepting: new connections wait in the kernel's backlog (HTTP
    /// surfaces: a burst is served a moment later instead of failing).
    Wait,
    /// Accept and turn away at once with the surface's busy answer (MySQL:
    /// error 1040, which pools understand).
    Refuse,
}

/// The numbers a door enforces.
#[derive(Debug, Clone)]
pub struct Caps {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once per peer uid (callers whose uid is unknown
    /// share one count).
    pub max_per_uid: usize,
    /// Connections open at once from callers the door refuses.
    pub max_refused: usize,
    /// File descriptors one connection may use (a proxy: two).
    pub fds_per_connection: usize,
    /// Full: wait or refuse.
    pub when_full: WhenFull,
    /// After the stop signal, connections still open after this are cut.
    pub shutdown_timeout: Duration,
    /// How long a connection over its uid's share may wait, unread, for one of
    /// that uid's places (HTTP surfaces: a burst from one application is served
    /// a moment later, while other uids are served at once). Zero: turned away
    /// at once.
    pub park_timeout: Duration,
}

/// Connections from refused callers open at once, by default: each gets one
/// answer and is closed.
pub const REFUSED_POOL: usize = 8;

impl Caps {
    /// `max_connections` in total and `max_per_uid` per uid, the default pool
    /// for refused callers, one fd each, waiting when full.
    pub fn new(max_connections: usize, max_per_uid: usize, shutdown_timeout: Duration) -> Self {
        Self {
            max_connections,
            max_per_uid: max_per_uid.min(max_connections),
            max_refused: REFUSED_POOL.min(max_connections),
            fds_per_connection: 1,
            when_full: WhenFull::Wait,
            shutdown_timeout,
            park_timeout: Duration::ZERO,
        }
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The door's `max_connections`.
    Full,
    /// This uid's cap.
    PeerFull,
    /// The pool for refused callers.
    RefusedFull,
    /// The process's open-files budget.
    Fds,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Busy::Full => "max_connections reached",
            Busy::PeerFull => {
                "this user's share of the connections (max_connections_per_uid) reached"
            }
            Busy::RefusedFull => "too many connections from callers that are not allowed",
            Busy::Fds => "the process's open-files budget (RLIMIT_NOFILE) is used up",
        })
    }
}

/// Open connections of a door.
#[derive(Default)]
pub struct Counts(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    total: usize,
    refused: usize,
    per_uid: HashMap<Option<u32>, usize>,
}

impl Counts {
    /// Whether the door has a free place (checked before accepting).
    pub fn has_room(&self, caps: &Caps) -> bool {
        lock(&self.0).total < caps.max_connections
    }

    /// Whether `uid` (an allowed caller's) is below its share.
    pub fn below_share(&self, caps: &Caps, uid: Option<u32>) -> bool {
        lock(&self.0).per_uid.get(&uid).copied().unwrap_or(0) < caps.max_per_uid
    }

    /// Takes a place for `peer`, or says which cap is reached.
    pub fn admit(&self, caps: &Caps, peer: &Peer, open: &Arc<AtomicU64>) -> Result<Slot, Busy> {
        let mut c = lock(&self.0);
        if c.total >= caps.max_connections {
            return Err(Busy::Full);
        }
        let key = if peer.allowed {
            let n = c.per_uid.get(&peer.uid).copied().unwrap_or(0);
            if n >= caps.max_per_uid {
                return Err(Busy::PeerFull);
            }
            Some(peer.uid)
        } else {
            if c.refused >= caps.max_refused {
                return Err(Busy::RefusedFull);
            }
            None
        };
        if !fds::take(caps.fds_per_connection) {
            return Err(Busy::Fds);
        }
        match key {
            Some(uid) => {
                let n = c.per_uid.entry(uid).or_insert(0);
                *n = n.saturating_add(1);
            }
            None => c.refused = c.refused.saturating_add(1),
        }
        c.total = c.total.saturating_add(1);
        open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            counts: self.0.clone(),
            key,
            fds: caps.fds_per_connection,
            open: open.clone(),
        })
    }
}

/// A connection's place; given back on drop.
pub struct Slot {
    counts: Arc<Mutex<Inner>>,
    /// `Some(uid)` for an allowed caller, `None` for a refused one.
    key: Option<Option<u32>>,
    fds: usize,
    open: Arc<AtomicU64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total = c.total.saturating_sub(1);
        match self.key {
            Some(uid) => {
                if let Some(n) = c.per_uid.get_mut(&uid) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        c.per_uid.remove(&uid);
                    }
                }
            }
            None => c.refused = c.refused.saturating_sub(1),
        }
        drop(c);
        fds::give(self.fds);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: Option<u32>, allowed: bool) -> Peer {
        Peer {
            uid,
            pid: None,
            addr: None,
            allowed,
        }
    }

    #[test]
    fn one_uid_cannot_take_every_place() {
        let caps = Caps::new(10, 4, Duration::from_secs(1));
        let counts = Counts::default();
        let open = Arc::default();
        let flood: Vec<Slot> = (0..4)
            .map(|_| {
                counts
                    .admit(&caps, &peer(Some(65534), true), &open)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            counts.admit(&caps, &peer(Some(65534), true), &open).err(),
            Some(Busy::PeerFull)
        );
        assert!(counts.admit(&caps, &peer(Some(0), true), &open).is_ok());
        drop(flood);
        assert!(counts.admit(&caps, &peer(Some(65534), true), &open).is_ok());
    }

    #[test]
    fn refused_callers_share_a_small_pool() {
        let caps = Caps::new(100, 50, Duration::from_secs(1));
        let counts = Counts::default();
        let open = Arc::new(AtomicU64::new(0));
        let held: Vec<Slot> = (0..REFUSED_POOL)
            .map(|_| {
                counts
                    .admit(&caps, &peer(Some(65534), false), &open)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            counts.admit(&caps, &peer(None, false), &open).err(),
            Some(Busy::RefusedFull)
        );
        assert!(counts.admit(&caps, &peer(Some(0), true), &open).is_ok());
        assert_eq!(open.load(Ordering::Relaxed), REFUSED_POOL as u64);
        drop(held);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }
}
