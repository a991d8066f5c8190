//! The process's file-descriptor budget. Every connection a door admits takes
//! its fds from one process-wide count (a database session two: the client and
//! SingleStore), derived from `RLIMIT_NOFILE` at start, so that a full process
//! answers "too many connections" (HTTP 503, MySQL error 1040) instead of
//! failing halfway with "too many open files": the budget keeps [`RESERVE`] fds
//! back for what is not a connection (log, config and token files, the auth
//! service and metadata clients, the accept that turns a connection away).
//!
//! At start the soft limit is raised to the hard limit where the kernel allows
//! (a common default is 1,024 soft; systemd's unit sets `LimitNOFILE=`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// File descriptors kept back from connections.
pub const RESERVE: usize = 64;

/// What [`raise`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

impl NoFile {
    /// Connections' share: the soft limit less [`RESERVE`].
    pub fn budget(&self) -> usize {
        usize::try_from(self.soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(RESERVE)
    }
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

struct Budget {
    limit: NoFile,
    free: AtomicUsize,
}

/// Raises `RLIMIT_NOFILE`'s soft limit to the hard limit (capped at 1,048,576)
/// where allowed, and returns the limits (read again, so what is reported is
/// what holds).
pub fn raise() -> NoFile {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return NoFile {
            before: 1024,
            soft: 1024,
            hard: 1024,
        };
    };
    let target = hard.min(1 << 20);
    if target > soft {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, target, hard);
    }
    let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((soft, hard));
    NoFile {
        before: soft,
        soft: now,
        hard,
    }
}

fn budget() -> &'static Budget {
    BUDGET.get_or_init(|| {
        let limit = raise();
        Budget {
            free: AtomicUsize::new(limit.budget()),
            limit,
        }
    })
}

/// The limits the budget was derived from (raising them on first use).
pub fn limits() -> NoFile {
    budget().limit
}

/// Connections' share of the fds: [`NoFile::budget`].
pub fn total() -> usize {
    budget().limit.budget()
}

/// Takes `n` fds from the budget, or `false` when fewer are left.
pub fn take(n: usize) -> bool {
    budget()
        .free
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
            free.checked_sub(n)
        })
        .is_ok()
}

/// Gives back `n` fds taken with [`take`].
pub fn give(n: usize) {
    let _ = budget()
        .free
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
            Some(free.saturating_add(n))
        });
}

/// Whether the configured caps fit the budget: `None` when they do, or the
/// warning to log, naming each surface's need (`(surface, max connections, fds
/// per connection)`).
pub fn check(surfaces: &[(String, usize, usize)], budget: usize) -> Option<String> {
    let need: usize = surfaces
        .iter()
        .map(|(_, n, per)| n.saturating_mul(*per))
        .fold(0, usize::saturating_add);
    if need <= budget {
        return None;
    }
    let parts: Vec<String> = surfaces
        .iter()
        .map(|(s, n, per)| format!("{s}: {n} x {per}"))
        .collect();
    Some(format!(
        "the configured connection caps need {need} file descriptors ({}) but the open-files limit leaves {budget} (RLIMIT_NOFILE {} less {RESERVE} kept back): past that, new connections are turned away (HTTP 503, MySQL error 1040); raise LimitNOFILE= (systemd) or ulimit -n, or lower max_connections",
        parts.join(", "),
        budget.saturating_add(RESERVE),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_that_do_not_fit_are_named() {
        let fits = [("token API".to_string(), 512, 1)];
        assert_eq!(check(&fits, 960), None);
        let over = [
            ("token API".to_string(), 512, 1),
            ("database_proxy db".to_string(), 1000, 2),
        ];
        let w = check(&over, 960).unwrap();
        assert!(
            w.contains("need 2512") && w.contains("database_proxy db: 1000 x 2"),
            "{w}"
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let l = raise();
        assert!(l.soft >= l.before);
        assert!(l.soft == l.hard.min(1 << 20) || l.soft == l.before);
    }
}
