//! The `--info-file` document, written atomically (temporary file in the same
//! directory, fsync, rename) so a reader polling for it never sees half of it:
//!
//! ```json
//! {"server_info": {"port": 8080, "pid": 123, "started_at": "2026-11-23T12:00:00Z",
//!   "endpoints": {"auth": "http://127.0.0.1:8080/auth/iam/:jwtType", ...},
//!   "cloud_url": "http://127.0.0.1:9090"}}
//! ```
//!
//! With `--api-listen`, `endpoints` also has `data_api` and `management_api`, and
//! `api_url` is their base URL:
//!
//! ```json
//! {"server_info": {"endpoints": {"data_api": "http://127.0.0.1:9191/api/v2",
//!   "management_api": "http://127.0.0.1:9191/v1", ...}, "api_url": "http://127.0.0.1:9191"}}
//! ```

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

/// Builds the server-info document for an auth server at `auth_url`.
pub fn server_info(port: u16, auth_url: &str, cloud_urls: &[String]) -> Value {
    json!({
        "server_info": {
            "port": port,
            "pid": std::process::id(),
            "started_at": crate::util::rfc3339(crate::util::now_unix()),
            "endpoints": {
                "auth": format!("{auth_url}/auth/iam/:jwtType"),
                "public_key": format!("{auth_url}/info/public-key"),
                "jwks": format!("{auth_url}/auth/oidc/op/Customer/.well-known/jwks.json"),
                "requests": format!("{auth_url}/info/requests"),
                "health": format!("{auth_url}/health"),
            },
            "cloud_url": cloud_urls.first(),
            "cloud_urls": cloud_urls,
        }
    })
}

/// Adds the mock Data API and Management API at `api_url` to the endpoints.
pub fn add_api_endpoints(doc: &mut Value, api_url: &str) {
    if let Some(endpoints) = doc["server_info"]["endpoints"].as_object_mut() {
        endpoints.insert("data_api".into(), json!(format!("{api_url}/api/v2")));
        endpoints.insert("management_api".into(), json!(format!("{api_url}/v1")));
    }
    doc["server_info"]["api_url"] = json!(api_url);
}

/// Writes `value` to `path` atomically.
pub fn write_atomic(path: &Path, value: &Value) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "info".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(value)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_complete_document_and_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("s2iam-info-{}", crate::util::random_hex(4)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("info.json");
        let doc = server_info(1234, "http://127.0.0.1:1234", &[]);
        write_atomic(&path, &doc).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["server_info"]["port"], 1234);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
