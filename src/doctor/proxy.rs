//! Proxy variables and what bypasses them.
//!
//! s2iam's HTTP client takes `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
//! `NO_PROXY` (either case) from the environment and always adds
//! [`NEVER_PROXIED`] (the metadata addresses and loopback) to `NO_PROXY`. This
//! check asks the same matcher reqwest uses (hyper-util's) where each endpoint
//! goes, so the answer is the client's, not a re-implementation's. It also says
//! whether the variables, as set, would send *other* programs' metadata requests
//! (an AWS SDK, curl) to the proxy: s2iam is safe from that, the application next
//! to it may not be.

use std::collections::BTreeMap;

use hyper_util::client::proxy::matcher::Matcher;

use super::{Check, DoctorOptions};
use crate::env::ProviderConfig;
use crate::http::{display_url, ProxySettings, NEVER_PROXIED};

/// The check's id.
pub const ID: &str = "proxy";

/// The well-known metadata addresses a proxy must never see.
pub const METADATA_HOSTS: [&str; 3] = [
    "169.254.169.254",
    "169.254.170.2",
    "metadata.google.internal",
];

/// What an endpoint is, which decides how bad proxying it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A metadata service: a proxy cannot reach it and must not see its tokens.
    Metadata,
    /// A cloud's global service (STS, IAM Credentials, Azure AD): proxying is normal.
    CloudService,
    /// The SingleStore auth service.
    AuthService,
}

/// Where one endpoint's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Which endpoint (`aws_imds`, `auth_service`, ...).
    pub name: &'static str,
    /// Its URL.
    pub url: String,
    /// What it is.
    pub kind: Kind,
    /// The proxy it goes through (credentials removed), `None` when direct.
    pub proxy: Option<String>,
}

/// The proxy variables and every endpoint's route.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// The proxy variables set, by name (values without credentials).
    pub vars: BTreeMap<String, String>,
    /// Every endpoint s2iam may talk to.
    pub routes: Vec<Route>,
    /// Metadata addresses the variables would send to a proxy for a client that,
    /// unlike s2iam, does not add them to `NO_PROXY` itself.
    pub captured_for_others: Vec<&'static str>,
    /// Upper- and lowercase variables that disagree (curl reads the lowercase
    /// `http_proxy` only, s2iam the uppercase one first).
    pub disagreeing: Vec<String>,
}

impl Analysis {
    /// The route of endpoint `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

const VARS: [&str; 4] = ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"];

/// Reads the variables and routes every endpoint of `cfg` (no I/O).
pub fn analyse(cfg: &ProviderConfig, opts: &DoctorOptions) -> Analysis {
    let mut vars = BTreeMap::new();
    let mut disagreeing = Vec::new();
    for upper in VARS {
        let lower = upper.to_ascii_lowercase();
        let (u, l) = (cfg.env.get(upper), cfg.env.get(&lower));
        for (name, value) in [(upper.to_string(), &u), (lower.clone(), &l)] {
            if let Some(v) = value {
                let shown = if name.eq_ignore_ascii_case("NO_PROXY") {
                    v.clone()
                } else {
                    display_url(v)
                };
                vars.insert(name, shown);
            }
        }
        if let (Some(u), Some(l)) = (&u, &l) {
            if u.trim() != l.trim() {
                disagreeing.push(format!("{upper}/{lower}"));
            }
        }
    }
    let settings = cfg.env.proxy_settings();
    let ours = matcher(&settings, true);
    let theirs = matcher(&settings, false);
    let routes = endpoints(cfg, opts)
        .into_iter()
        .map(|(name, url, kind)| Route {
            proxy: proxy_for(&ours, &url),
            name,
            url,
            kind,
        })
        .collect();
    let captured_for_others = METADATA_HOSTS
        .into_iter()
        .filter(|h| proxy_for(&theirs, &format!("http://{h}/")).is_some())
        .collect();
    Analysis {
        vars,
        routes,
        captured_for_others,
        disagreeing,
    }
}

/// The matcher of `settings`; with `with_defaults`, `NO_PROXY` gains
/// [`NEVER_PROXIED`] as s2iam's client does.
fn matcher(settings: &ProxySettings, with_defaults: bool) -> Matcher {
    let no = match (&settings.no_proxy, with_defaults) {
        (Some(list), true) => format!("{list},{NEVER_PROXIED}"),
        (None, true) => NEVER_PROXIED.to_string(),
        (Some(list), false) => list.clone(),
        (None, false) => String::new(),
    };
    Matcher::builder()
        .https(settings.https.clone().unwrap_or_default())
        .http(settings.http.clone().unwrap_or_default())
        .all(settings.all.clone().unwrap_or_default())
        .no(no)
        .build()
}

/// The proxy `url` goes through under `m`, without credentials.
fn proxy_for(m: &Matcher, url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    m.intercept(&uri).map(|i| display_url(&i.uri().to_string()))
}

/// Every endpoint s2iam may talk to, with what it is.
fn endpoints(cfg: &ProviderConfig, opts: &DoctorOptions) -> Vec<(&'static str, String, Kind)> {
    let e = &cfg.endpoints;
    let auth = opts
        .server_url
        .clone()
        .unwrap_or_else(|| e.auth_server.clone())
        .replace(":jwtType", "api")
        .replace(":cloudProvider", "aws");
    let mut list = vec![
        ("aws_imds", e.aws_imds.clone(), Kind::Metadata),
        ("aws_container", e.ecs_credentials.clone(), Kind::Metadata),
        ("gcp_metadata", e.gcp_metadata.clone(), Kind::Metadata),
        (
            "gcp_metadata_probe",
            e.gcp_metadata_probe.clone(),
            Kind::Metadata,
        ),
        ("azure_imds", e.azure_imds.clone(), Kind::Metadata),
        (
            "gcp_iamcredentials",
            e.gcp_iamcredentials.clone(),
            Kind::CloudService,
        ),
        (
            "azure_authority",
            e.azure_authority.clone(),
            Kind::CloudService,
        ),
        ("auth_service", auth, Kind::AuthService),
    ];
    if let Some(sts) = super::sts_url(cfg, None) {
        list.push(("aws_sts", sts, Kind::CloudService));
    }
    for (name, var) in [
        (
            "aws_container_full_uri",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ),
        ("azure_identity_endpoint", "IDENTITY_ENDPOINT"),
        ("azure_msi_endpoint", "MSI_ENDPOINT"),
    ] {
        if let Some(url) = cfg.env.get(var) {
            list.push((name, url, Kind::Metadata));
        }
    }
    list
}

/// The verdict on `a`.
pub fn check(a: &Analysis) -> Check {
    let mut details: BTreeMap<String, String> = a
        .vars
        .iter()
        .map(|(k, v)| (format!("env.{k}"), v.clone()))
        .collect();
    for r in &a.routes {
        let via = r
            .proxy
            .as_deref()
            .map_or("direct".to_string(), |p| format!("via {p}"));
        details.insert(format!("route.{}", r.name), via);
    }
    let with_details = |mut c: Check| {
        c.details = details.clone();
        c
    };
    let proxied = |kind: Kind| -> Vec<&Route> {
        a.routes
            .iter()
            .filter(|r| r.kind == kind && r.proxy.is_some())
            .collect()
    };
    let metadata = proxied(Kind::Metadata);
    if !metadata.is_empty() {
        let hosts = hosts_of(&metadata);
        return with_details(Check::fail(
            ID,
            format!(
                "metadata requests would go through a proxy, which cannot reach them and must not see their tokens: {}",
                describe(&metadata)
            ),
            format!("add {hosts} to NO_PROXY (and no_proxy)"),
        ));
    }
    let proxy_vars_set = a.vars.keys().any(|k| !k.eq_ignore_ascii_case("NO_PROXY"));
    if !proxy_vars_set {
        return with_details(Check::pass(
            ID,
            "no proxy variables set: every request goes direct",
        ));
    }
    let mut warnings = Vec::new();
    let mut fixes = Vec::new();
    if !a.captured_for_others.is_empty() {
        let hosts = a.captured_for_others.join(",");
        warnings.push(format!(
            "the proxy variables would capture metadata requests ({hosts}) of programs that do not bypass them the way s2iam does (AWS and Google SDKs, curl)"
        ));
        fixes.push(format!("add {hosts} to NO_PROXY and no_proxy"));
    }
    let auth = proxied(Kind::AuthService);
    if !auth.is_empty() {
        warnings.push(format!(
            "the auth service goes through a proxy: {}",
            describe(&auth)
        ));
        fixes.push(format!(
            "make sure the proxy allows CONNECT to {h} (or add {h} to NO_PROXY)",
            h = hosts_of(&auth)
        ));
    }
    if !a.disagreeing.is_empty() {
        warnings.push(format!(
            "{} differ: s2iam uses the uppercase one, curl the lowercase one",
            a.disagreeing.join(", ")
        ));
        fixes.push("set both cases to the same value".into());
    }
    if warnings.is_empty() {
        let cloud = proxied(Kind::CloudService);
        let note = if cloud.is_empty() {
            "nothing s2iam talks to matches them".to_string()
        } else {
            format!("cloud services via proxy ({})", describe(&cloud))
        };
        return with_details(Check::pass(
            ID,
            format!("proxy variables set; metadata and auth service direct; {note}"),
        ));
    }
    with_details(Check::warn(ID, warnings.join("; "), fixes.join("; ")))
}

fn describe(routes: &[&Route]) -> String {
    routes
        .iter()
        .map(|r| {
            format!(
                "{} {} via {}",
                r.name,
                display_url(&r.url),
                r.proxy.as_deref().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn hosts_of(routes: &[&Route]) -> String {
    let mut hosts: Vec<String> = routes
        .iter()
        .filter_map(|r| url::Url::parse(&r.url).ok()?.host_str().map(String::from))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;
    use crate::env::{Env, Fs};

    fn cfg(pairs: &[(&str, &str)]) -> ProviderConfig {
        ProviderConfig::with_env(
            Env::from_pairs(pairs.iter().copied()),
            Fs::from_files::<&str, &str>([]),
        )
    }

    fn run(pairs: &[(&str, &str)]) -> (Analysis, Check) {
        let a = analyse(&cfg(pairs), &DoctorOptions::default());
        let c = check(&a);
        (a, c)
    }

    #[test]
    fn no_variables_pass_and_everything_is_direct() {
        let (a, c) = run(&[]);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(a.routes.iter().all(|r| r.proxy.is_none()));
        assert_eq!(c.details["route.auth_service"], "direct");
    }

    #[test]
    fn metadata_is_never_proxied_by_s2iam_but_would_be_for_others() {
        let (a, c) = run(&[("HTTP_PROXY", "http://user:pw@proxy.example:3128")]);
        assert!(a.route("aws_imds").unwrap().proxy.is_none());
        assert!(a.route("gcp_metadata").unwrap().proxy.is_none());
        assert_eq!(a.captured_for_others.len(), 3);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.fix.as_deref().unwrap().contains("169.254.169.254"));
        // The proxy's password is never shown.
        let shown = format!("{c:?}");
        assert!(!shown.contains("pw"), "{shown}");
    }

    #[test]
    fn no_proxy_covering_metadata_passes() {
        let (a, c) = run(&[
            ("HTTPS_PROXY", "http://proxy.example:3128"),
            (
                "NO_PROXY",
                "169.254.0.0/16,.google.internal,authsvc.singlestore.com",
            ),
        ]);
        assert!(a.captured_for_others.is_empty());
        assert!(a.route("auth_service").unwrap().proxy.is_none());
        assert!(a.route("aws_sts").unwrap().proxy.is_some());
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.message.contains("cloud services via proxy"), "{c:?}");
    }

    #[test]
    fn auth_service_through_a_proxy_warns() {
        let (a, c) = run(&[
            ("https_proxy", "http://proxy.example:3128"),
            (
                "no_proxy",
                "169.254.169.254,169.254.170.2,metadata.google.internal",
            ),
        ]);
        assert_eq!(
            a.route("auth_service").unwrap().proxy.as_deref(),
            Some("http://proxy.example:3128/")
        );
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.message.contains("auth service"), "{c:?}");
        assert!(c.fix.unwrap().contains("authsvc.singlestore.com"));
    }

    #[test]
    fn an_overridden_metadata_endpoint_behind_a_proxy_fails() {
        let (_, c) = run(&[
            ("HTTP_PROXY", "http://proxy.example:3128"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://imds.example"),
        ]);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert_eq!(
            c.fix.as_deref(),
            Some("add imds.example to NO_PROXY (and no_proxy)")
        );
    }

    #[test]
    fn disagreeing_cases_warn() {
        let (_, c) = run(&[
            ("HTTPS_PROXY", "http://a.example:1"),
            ("https_proxy", "http://b.example:1"),
            (
                "NO_PROXY",
                "169.254.169.254,169.254.170.2,metadata.google.internal,authsvc.singlestore.com",
            ),
        ]);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.message.contains("HTTPS_PROXY/https_proxy differ"),
            "{c:?}"
        );
    }
}
