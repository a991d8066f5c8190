//! The HTTP layer every outbound call shares: one client factory (proxies from
//! the injected environment), used by the metadata clients, STS, Google, Azure AD
//! and the auth-service exchange; and the client the sidecar's API proxies forward
//! with.

mod client;

pub use client::{client, forwarding_client, ForwardingTimeouts, ProxySettings, NEVER_PROXIED};
