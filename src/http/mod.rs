//! The HTTP layer every outbound call shares: one client factory with proxies
//! from the injected environment ([`client()`]), one capped body reader
//! ([`fetch()`]), one transport error ([`TransportError`]) and one retry policy
//! ([`mod@retry`]: backoff, jitter, `Retry-After`), used by the metadata clients,
//! STS, Google, Azure AD and the auth-service exchange; and the client the
//! sidecar's API proxies forward with.

mod client;
pub mod error;
pub mod fetch;
pub mod retry;

pub use client::{client, forwarding_client, ForwardingTimeouts, ProxySettings, NEVER_PROXIED};
pub use error::{error_chain, TransportError};
pub use fetch::{display_url, fetch, parse_retry_after, snippet, Reply, MAX_BODY_BYTES};
pub use retry::{
    after_retry_after, caller_retries, caller_retries_set, retry, retry_answers, GaveUp,
    RetryPolicy, Step,
};
