//! The one HTTP client factory: every metadata, STS, Google, Azure AD and auth
//! service call goes through a client built here.

use std::time::Duration;

/// Proxy settings, as read from the injected environment (see
/// [`crate::env::Env::proxy_settings`]); never from the process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// `HTTPS_PROXY`.
    pub https: Option<String>,
    /// `HTTP_PROXY`.
    pub http: Option<String>,
    /// `ALL_PROXY`.
    pub all: Option<String>,
    /// `NO_PROXY`: hosts reached directly, added to [`NEVER_PROXIED`].
    pub no_proxy: Option<String>,
}

/// Hosts no request to is ever sent through a proxy: the metadata services
/// (link-local: a proxy cannot reach them, and must not see their tokens) and this
/// machine.
pub const NEVER_PROXIED: &str =
    "169.254.0.0/16,fd00:ec2::/32,metadata.google.internal,metadata,localhost,127.0.0.0/8,::1";

/// The client every credential source shares (one connection pool): rustls, a
/// short connect timeout so a missing metadata service fails fast, and the proxy
/// settings of `proxies` (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, either
/// case) for the global services (STS, IAM Credentials, Azure AD), as the cloud
/// SDKs do — never for [`NEVER_PROXIED`] hosts.
pub fn client(proxies: &ProxySettings) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("s2iam/", env!("CARGO_PKG_VERSION")));
    let proxies = proxies.to_reqwest();
    if proxies.is_empty() {
        builder = builder.no_proxy();
    }
    for proxy in proxies {
        builder = builder.proxy(proxy);
    }
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

/// Timeouts of a [`forwarding_client`].
#[derive(Debug, Clone, Copy)]
pub struct ForwardingTimeouts {
    /// To open the connection (TCP and TLS).
    pub connect: Duration,
    /// Longest silence while reading a response (a body may stream for longer).
    pub read: Duration,
}

/// The client an API proxy forwards requests with: rustls with the built-in
/// Mozilla roots plus `extra_roots`, no redirects followed and no decompression
/// (the answer passes to the application as the upstream sent it), no
/// `User-Agent` of its own (the application's is forwarded), and the same proxy
/// policy as [`client`]: `proxies` for the upstream, never for [`NEVER_PROXIED`]
/// hosts (a mock upstream on loopback).
pub fn forwarding_client(
    proxies: &ProxySettings,
    timeouts: ForwardingTimeouts,
    extra_roots: Vec<reqwest::Certificate>,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .referer(false);
    for root in extra_roots {
        builder = builder.add_root_certificate(root);
    }
    let proxies = proxies.to_reqwest();
    if proxies.is_empty() {
        builder = builder.no_proxy();
    }
    for proxy in proxies {
        builder = builder.proxy(proxy);
    }
    builder.build()
}

impl ProxySettings {
    fn to_reqwest(&self) -> Vec<reqwest::Proxy> {
        let no_proxy = match &self.no_proxy {
            Some(list) => format!("{list},{NEVER_PROXIED}"),
            None => NEVER_PROXIED.to_string(),
        };
        type MakeProxy = fn(&str) -> reqwest::Result<reqwest::Proxy>;
        let kinds: [(&str, &Option<String>, MakeProxy); 3] = [
            ("HTTPS_PROXY", &self.https, |u| reqwest::Proxy::https(u)),
            ("HTTP_PROXY", &self.http, |u| reqwest::Proxy::http(u)),
            ("ALL_PROXY", &self.all, |u| reqwest::Proxy::all(u)),
        ];
        kinds
            .iter()
            .filter_map(|(name, url, make)| {
                let url = url.as_deref()?;
                match make(url) {
                    Ok(p) => Some(p.no_proxy(reqwest::NoProxy::from_string(&no_proxy))),
                    Err(e) => {
                        tracing::warn!(variable = name, error = %e, "ignoring an unusable proxy setting");
                        None
                    }
                }
            })
            .collect()
    }
}
