//! The HTTP layer every outbound call shares: one client factory (proxies from
//! the injected environment), used by the metadata clients, STS, Google, Azure AD
//! and the auth-service exchange.

mod client;

pub use client::{client, ProxySettings, NEVER_PROXIED};
