//! The auth service's URL: a template with `:jwtType` and `:cloudProvider`,
//! validated once (https unless allowed, a host, no credentials in it).

use super::{ExchangeError, JwtType, JWKS_PATH};
use crate::provider::CloudProvider;

/// A validated server URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    template: String,
    /// The template filled for each JWT type (rows: database, api) and cloud
    /// (columns: aws, gcp, azure), parsed once so that no request can meet an
    /// unparsable URL.
    urls: [[url::Url; 3]; 2],
}

impl ServerUrl {
    /// Validates `template` before any I/O: it must parse as a URL once its
    /// placeholders are filled, and use https unless `allow_http`.
    pub fn parse(template: &str, allow_http: bool) -> Result<Self, ExchangeError> {
        use CloudProvider::{Aws, Azure, Gcp};
        let one = |jwt_type, provider| parse_filled(template, jwt_type, provider, allow_http);
        let urls = [
            [
                one(JwtType::Database, Aws)?,
                one(JwtType::Database, Gcp)?,
                one(JwtType::Database, Azure)?,
            ],
            [
                one(JwtType::Api, Aws)?,
                one(JwtType::Api, Gcp)?,
                one(JwtType::Api, Azure)?,
            ],
        ];
        Ok(Self {
            template: template.to_string(),
            urls,
        })
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The URL for one request, with `workspaceGroupID` added for database tokens.
    pub fn resolve(
        &self,
        jwt_type: JwtType,
        provider: CloudProvider,
        workspace_group_id: Option<&str>,
    ) -> url::Url {
        let row = match jwt_type {
            JwtType::Database => &self.urls[0],
            JwtType::Api => &self.urls[1],
        };
        let mut url = match provider {
            CloudProvider::Aws => row[0].clone(),
            CloudProvider::Gcp => row[1].clone(),
            CloudProvider::Azure => row[2].clone(),
        };
        if let (JwtType::Database, Some(id)) = (jwt_type, workspace_group_id) {
            url.query_pairs_mut().append_pair("workspaceGroupID", id);
        }
        url
    }

    /// Whether the server is on this machine (`localhost` or a loopback address).
    pub fn is_loopback(&self) -> bool {
        let url = self.resolve(JwtType::Api, CloudProvider::Aws, None);
        match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
    }

    /// Where the server publishes its signing keys.
    pub fn jwks_url(&self) -> url::Url {
        let mut url = self.resolve(JwtType::Api, CloudProvider::Aws, None);
        url.set_path(JWKS_PATH);
        url.set_query(None);
        url
    }
}

/// `template` filled for one JWT type and cloud, parsed and checked.
fn parse_filled(
    template: &str,
    jwt_type: JwtType,
    provider: CloudProvider,
    allow_http: bool,
) -> Result<url::Url, ExchangeError> {
    let url = url::Url::parse(&fill(template, jwt_type, provider)).map_err(|e| {
        ExchangeError::InvalidServerUrl {
            url: template.to_string(),
            reason: e.to_string(),
        }
    })?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(ExchangeError::HttpNotAllowed {
                url: template.to_string(),
            })
        }
        other => {
            return Err(ExchangeError::InvalidServerUrl {
                url: template.to_string(),
                reason: format!("scheme {other:?} is not https"),
            })
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ExchangeError::InvalidServerUrl {
            url: template.to_string(),
            reason: "no host".into(),
        });
    }
    Ok(url)
}

fn fill(template: &str, jwt_type: JwtType, provider: CloudProvider) -> String {
    template
        .replace(":jwtType", jwt_type.as_str())
        .replace(":cloudProvider", provider.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_validation() {
        assert!(ServerUrl::parse("https://a.example/auth/iam/:jwtType", false).is_ok());
        assert!(matches!(
            ServerUrl::parse("http://127.0.0.1:1/auth/iam/:jwtType", false),
            Err(ExchangeError::HttpNotAllowed { .. })
        ));
        assert!(ServerUrl::parse("http://127.0.0.1:1/auth/iam/:jwtType", true).is_ok());
        assert!(ServerUrl::parse("ftp://x/", true).is_err());
        assert!(ServerUrl::parse("not a url", true).is_err());
    }

    #[test]
    fn loopback_servers_are_recognised() {
        for (url, want) in [
            ("http://127.0.0.1:1/x", true),
            ("http://localhost:8/x", true),
            ("http://[::1]:8/x", true),
            ("https://authsvc.singlestore.com/auth/iam/:jwtType", false),
            ("http://10.0.0.1/x", false),
        ] {
            assert_eq!(
                ServerUrl::parse(url, true).unwrap().is_loopback(),
                want,
                "{url}"
            );
        }
    }

    #[test]
    fn templating_and_query() {
        let s = ServerUrl::parse("https://h/:cloudProvider/auth/iam/:jwtType?x=1", false).unwrap();
        let u = s.resolve(JwtType::Database, CloudProvider::Gcp, Some("wg 1"));
        assert_eq!(
            u.as_str(),
            "https://h/gcp/auth/iam/database?x=1&workspaceGroupID=wg+1"
        );
        let u = s.resolve(JwtType::Api, CloudProvider::Azure, Some("ignored"));
        assert_eq!(u.as_str(), "https://h/azure/auth/iam/api?x=1");
        assert_eq!(
            s.jwks_url().as_str(),
            "https://h/auth/oidc/op/Customer/.well-known/jwks.json"
        );
    }
}
