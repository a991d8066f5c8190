//! Parsers for one setting's value (a duration, a file mode, a TCP address),
//! naming the setting in their errors.

use std::net::SocketAddr;
use std::time::Duration;

use super::{invalid, ConfigError};
use s2iam::util::parse_duration;

/// A loopback `ip:port`, or any with `allow_non_loopback`.
pub(super) fn parse_tcp(text: &str, allow_non_loopback: bool) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| invalid("listen.tcp", format!("{text:?} is not an ip:port address")))?;
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(invalid(
            "listen.tcp",
            format!("{addr} is not a loopback address; tokens would be served to the network (set allow_non_loopback = true to force)"),
        ));
    }
    Ok(addr)
}

/// A Go-style duration (`10s`, `1m30s`), or `default` when unset; refused
/// outside `limits` (a zero `cache.tick` would stop both refreshers; a 100-year
/// `auth.timeout` would overflow the deadline clock).
pub(super) fn duration(
    setting: &str,
    value: Option<&str>,
    default: Duration,
    limits: std::ops::RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let d = parse_duration(text).map_err(|e| invalid(setting, e.to_string()))?;
    if !limits.contains(&d) {
        let show = |d: &Duration| humantime::format_duration(*d).to_string();
        return Err(invalid(
            setting,
            format!(
                "{:?} is outside {} ..= {}",
                s2iam::util::snippet(text, 40),
                show(limits.start()),
                show(limits.end())
            ),
        ));
    }
    Ok(d)
}

/// The most connections one listener may hold open (`listen.max_connections`,
/// `max_connections_per_uid`; the proxies use the same bound): far above what a
/// sidecar serves, far below where tokio's semaphore would panic.
pub const MAX_CONNECTIONS: usize = 100_000;
/// The most on-demand keys the cache keeps (`cache.max_on_demand`).
pub const MAX_ON_DEMAND: usize = 1_000_000;
/// The highest rate of cold exchanges (`access.cold_fetches_*_per_second`).
pub const MAX_RATE: u32 = 100_000;

/// A count (connections, keys, a rate), or `default` when unset; refused
/// outside `limits`. Every count has an upper bound: a huge one would panic in
/// tokio's semaphore (`Semaphore::MAX_PERMITS` is `usize::MAX >> 3`) or promise
/// memory the process cannot have.
pub(super) fn count<T>(
    setting: &str,
    value: Option<T>,
    default: T,
    limits: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: Copy + PartialOrd + std::fmt::Display,
{
    let v = value.unwrap_or(default);
    if !limits.contains(&v) {
        return Err(invalid(
            setting,
            format!("{v} is outside {} ..= {}", limits.start(), limits.end()),
        ));
    }
    Ok(v)
}

pub(super) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(super) const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An octal file mode (`"0640"`), or `default` when unset.
pub(super) fn mode(setting: &str, value: Option<&str>, default: u32) -> Result<u32, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    let m = u32::from_str_radix(v.trim_start_matches("0o"), 8).map_err(|_| {
        invalid(
            setting,
            format!("{v:?} is not an octal file mode like \"0640\""),
        )
    })?;
    if m > 0o777 {
        return Err(invalid(setting, format!("{v:?} is not a file mode")));
    }
    Ok(m)
}
