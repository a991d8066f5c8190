//! The mutation: a workload whose pod template says `s2iam.singlestore.com/inject:
//! "true"` gets s2iam as a native sidecar (an init container with `restartPolicy:
//! Always`, Kubernetes 1.29+), the same container `deploy/kubernetes/base` runs and
//! `scripts/check-deploy` validates and scans:
//!
//! - the sidecar first among the init containers (other init containers can use it),
//!   its config generated from the annotations (`S2IAM_CONFIG_TOML`) or a ConfigMap,
//!   exec probes through `s2iam probe` on the socket (`/startupz` holds the app back
//!   until the identity works and the tokens are warm; `/readyz`; `/healthz`), the
//!   measured resources, a hardened security context (uid 65532, read-only root,
//!   no capabilities, no privilege escalation, RuntimeDefault seccomp);
//! - an in-memory `emptyDir` at `/run/s2iam` shared with the app containers
//!   (read-only for them), group 65532 added to the pod's `supplementalGroups` so
//!   the app can use the 0660 socket and read the 0640 token files, whatever uid it
//!   runs as (nothing else of the pod's security context changes);
//! - environment for the app containers: `S2IAM_SOCKET`, the token files' paths,
//!   the proxies' addresses (a variable the container already sets is kept).
//!
//! Idempotent: a pod template that already has a container named `s2iam` is left
//! alone ([`Outcome::AlreadyPresent`]) unless [`Options::update`], which removes what
//! s2iam added and adds it again from the current annotations.

use serde_json::{json, Map, Value};

use super::annotations::{self, AnnotationError, Settings, TokenFile};

/// The sidecar container's name, also how an injected pod is recognised.
pub const SIDECAR: &str = "s2iam";
/// The shared volume.
pub const RUN_VOLUME: &str = "s2iam-run";
/// The ConfigMap volume (`config-map` annotation).
pub const CONFIG_VOLUME: &str = "s2iam-config";
/// Where the shared volume is mounted.
pub const RUN_DIR: &str = "/run/s2iam";
/// The sidecar's socket.
pub const SOCKET: &str = "/run/s2iam/s2iam.sock";
/// The sidecar's uid and group (the image's user); the group is added to the pod.
pub const UID: u64 = 65532;
/// The binary in the image (deploy/Dockerfile).
pub const BINARY: &str = "/usr/local/bin/s2iam";
/// The database proxy's address in the pod.
pub const DATABASE_PROXY: &str = "127.0.0.1:3306";
/// The Data API proxy's address in the pod.
pub const DATA_API_PROXY: &str = "127.0.0.1:8081";

/// Every variable s2iam may give the app containers, with its one value; an update
/// removes an entry only when both match (a value the app set itself stays).
const APP_ENV: &[(&str, &str)] = &[
    ("S2IAM_SOCKET", SOCKET),
    ("S2IAM_DATABASE_TOKEN_FILE", "/run/s2iam/database.jwt"),
    ("S2IAM_API_TOKEN_FILE", "/run/s2iam/api.jwt"),
    ("SINGLESTORE_HOST", "127.0.0.1"),
    ("SINGLESTORE_PORT", "3306"),
    ("S2IAM_DATA_API_URL", "http://127.0.0.1:8081"),
];

/// How to inject.
#[derive(Debug, Clone)]
pub struct Options {
    /// The sidecar image when the `image` annotation does not say.
    pub image: String,
    /// Replace an s2iam that is already there instead of leaving it alone.
    pub update: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            image: default_image(),
            update: false,
        }
    }
}

/// The image of this release (deploy/kubernetes/base uses the same reference).
pub fn default_image() -> String {
    format!("registry.example.com/s2iam:{}", env!("CARGO_PKG_VERSION"))
}

/// What [`mutate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a workload, or no `inject: "true"` annotation: unchanged.
    NotAnnotated,
    /// Annotated, s2iam already there: unchanged.
    AlreadyPresent,
    /// s2iam added (or replaced, with [`Options::update`]).
    Injected,
}

/// Why an object cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// An annotation's value is not usable.
    #[error("{kind} {name}: {source}")]
    Annotation {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// What is wrong.
        source: AnnotationError,
    },
    /// The pod spec is not the shape Kubernetes defines.
    #[error("{kind} {name}: {message}")]
    Shape {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Adds s2iam to `object` (a Pod, a workload, or a `List` of them) if its pod
/// template asks; see the module documentation.
pub fn mutate(object: &mut Value, options: &Options) -> Result<Outcome, InjectError> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.ends_with("List") {
        let mut outcome = Outcome::NotAnnotated;
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                match (mutate(item, options)?, outcome) {
                    (Outcome::Injected, _) => outcome = Outcome::Injected,
                    (Outcome::AlreadyPresent, Outcome::NotAnnotated) => {
                        outcome = Outcome::AlreadyPresent
                    }
                    _ => {}
                }
            }
        }
        return Ok(outcome);
    }
    let name = object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)")
        .to_string();
    let Some(template) = pod_template(object, &kind) else {
        return Ok(Outcome::NotAnnotated);
    };
    let shape = |message: &str| InjectError::Shape {
        kind: kind.clone(),
        name: name.clone(),
        message: message.to_string(),
    };
    let annotations = template
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    if !annotations::wants_injection(annotations) {
        return Ok(Outcome::NotAnnotated);
    }
    let settings = annotations::parse(annotations.cloned().as_ref().unwrap_or(&Map::new()))
        .map_err(|source| InjectError::Annotation {
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
    let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(shape("the pod template has no spec"));
    };
    if has_sidecar(spec) {
        if !options.update {
            return Ok(Outcome::AlreadyPresent);
        }
        remove(spec);
    }
    add(spec, &settings, options).map_err(|m| shape(&m))?;
    let metadata = template
        .as_object_mut()
        .and_then(|t| t.get_mut("metadata"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| shape("the pod template has no metadata"))?;
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| shape("metadata.annotations is not a map"))?;
    annotations.insert(annotations::STATUS.into(), json!("injected"));
    Ok(Outcome::Injected)
}

/// The pod template of a workload kind (the Pod itself for a Pod).
fn pod_template<'a>(object: &'a mut Value, kind: &str) -> Option<&'a mut Value> {
    match kind {
        "Pod" => Some(object),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => object.pointer_mut("/spec/template"),
        "CronJob" => object.pointer_mut("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn has_sidecar(spec: &Map<String, Value>) -> bool {
    ["initContainers", "containers"].iter().any(|list| {
        spec.get(*list)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == SIDECAR))
    })
}

/// Takes out everything [`add`] puts in (for an update).
fn remove(spec: &mut Map<String, Value>) {
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.retain(|c| c["name"] != SIDECAR);
        }
    }
    if spec
        .get("initContainers")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        spec.remove("initContainers");
    }
    if let Some(vs) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        vs.retain(|v| v["name"] != RUN_VOLUME && v["name"] != CONFIG_VOLUME);
    }
    if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in cs {
            if let Some(ms) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                ms.retain(|m| m["name"] != RUN_VOLUME);
            }
            if let Some(es) = c.get_mut("env").and_then(Value::as_array_mut) {
                es.retain(|e| {
                    !APP_ENV
                        .iter()
                        .any(|(n, v)| e["name"] == *n && e["value"] == *v)
                });
            }
        }
    }
}

/// Adds the sidecar, the volumes, the app containers' mount and environment, and the
/// pod's supplementary group.
fn add(spec: &mut Map<String, Value>, s: &Settings, options: &Options) -> Result<(), String> {
    let containers = spec
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .ok_or("the pod spec has no containers")?;
    if let Some(wanted) = &s.containers {
        for name in wanted {
            if !containers.iter().any(|c| c["name"] == name.as_str()) {
                return Err(format!(
                    "the containers annotation names {name:?}, which this pod does not have"
                ));
            }
        }
    }
    let env = app_env(s);
    for c in containers.iter_mut() {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        if s.containers.as_ref().is_some_and(|w| !w.contains(&name)) {
            continue;
        }
        let c = c.as_object_mut().ok_or("a container is not a map")?;
        push_unique(c, "volumeMounts", "mountPath", run_mount(true))?;
        if s.env {
            for e in &env {
                push_unique(c, "env", "name", e.clone())?;
            }
        }
    }
    let inits = array(spec, "initContainers")?;
    inits.insert(0, sidecar(s, options));
    push_unique(spec, "volumes", "name", run_volume())?;
    if let Some(cm) = &s.config_map {
        push_unique(
            spec,
            "volumes",
            "name",
            json!({"name": CONFIG_VOLUME, "configMap": {"name": cm}}),
        )?;
    }
    let security = spec
        .entry("securityContext")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or("securityContext is not a map")?;
    let groups = security
        .entry("supplementalGroups")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or("securityContext.supplementalGroups is not a list")?;
    if !groups.iter().any(|g| g.as_u64() == Some(UID)) {
        groups.push(json!(UID));
    }
    Ok(())
}

/// The list `key` of `map`, created empty if absent.
fn array<'a>(map: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Vec<Value>, String> {
    map.entry(key)
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| format!("{key} is not a list"))
}

/// Appends `item` to the list `key` unless an entry with the same `by` is there.
fn push_unique(
    map: &mut Map<String, Value>,
    key: &str,
    by: &str,
    item: Value,
) -> Result<(), String> {
    let list = array(map, key)?;
    if !list.iter().any(|x| x[by] == item[by]) {
        list.push(item);
    }
    Ok(())
}

fn run_mount(read_only: bool) -> Value {
    if read_only {
        // Connecting to a socket and reading files need no write access.
        json!({"name": RUN_VOLUME, "mountPath": RUN_DIR, "readOnly": true})
    } else {
        json!({"name": RUN_VOLUME, "mountPath": RUN_DIR})
    }
}

fn run_volume() -> Value {
    // In memory: tokens never touch the node's disk.
    json!({"name": RUN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
}

fn token_path(f: TokenFile) -> &'static str {
    match f {
        TokenFile::Database => "/run/s2iam/database.jwt",
        TokenFile::Api => "/run/s2iam/api.jwt",
    }
}

fn app_env(s: &Settings) -> Vec<Value> {
    let var = |name: &str, value: &str| json!({"name": name, "value": value});
    let mut env = Vec::new();
    env.push(var("S2IAM_SOCKET", SOCKET));
    for f in &s.token_files {
        let name = match f {
            TokenFile::Database => "S2IAM_DATABASE_TOKEN_FILE",
            TokenFile::Api => "S2IAM_API_TOKEN_FILE",
        };
        env.push(var(name, token_path(*f)));
    }
    if s.database_proxy.is_some() {
        env.push(var("SINGLESTORE_HOST", "127.0.0.1"));
        env.push(var("SINGLESTORE_PORT", "3306"));
    }
    if s.data_api_proxy.is_some() {
        env.push(var(
            "S2IAM_DATA_API_URL",
            &format!("http://{DATA_API_PROXY}"),
        ));
    }
    env
}

fn probe(path: &str, period: u32, failures: u32) -> Value {
    json!({
        "exec": {"command": [BINARY, "probe", "--socket", SOCKET, "--timeout", "2s", path]},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    })
}

/// The sidecar container, as in deploy/kubernetes/base/deployment.yaml.
fn sidecar(s: &Settings, options: &Options) -> Value {
    // Exit 0 when the kubelet stops the pod (143 would read as an Error).
    let mut args = vec![json!("serve"), json!("--exit-zero-on-sigterm")];
    let mut env = vec![json!({"name": "S2IAM_LOG", "value": "info"})];
    let mut mounts = vec![run_mount(false)];
    match &s.config_map {
        Some(_) => {
            args.extend([json!("--config"), json!("/etc/s2iam/config.toml")]);
            mounts
                .push(json!({"name": CONFIG_VOLUME, "mountPath": "/etc/s2iam", "readOnly": true}));
        }
        None => env.push(json!({"name": "S2IAM_CONFIG_TOML", "value": config_toml(s)})),
    }
    let r = &s.resources;
    json!({
        "name": SIDECAR,
        "image": s.image.clone().unwrap_or_else(|| options.image.clone()),
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "args": args,
        "env": env,
        // 180 s for the identity to work and the tokens to warm (a new pod's metadata
        // service can take seconds; the config retries detection for 120 s).
        "startupProbe": probe("/startupz", 2, 90),
        "readinessProbe": probe("/readyz", 10, 3),
        "livenessProbe": probe("/healthz", 20, 3),
        "resources": {
            "requests": {"cpu": r.cpu_request, "memory": r.memory_request},
            "limits": {"cpu": r.cpu_limit, "memory": r.memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": UID,
            "runAsGroup": UID,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    })
}

/// The sidecar's configuration from the annotations. Every value was checked
/// against a strict alphabet (no quote, backslash or newline), so quoting is enough.
pub fn config_toml(s: &Settings) -> String {
    let mut t = String::from(
        "[listen]\nsocket = \"/run/s2iam/s2iam.sock\"\n\
         # Group 65532 (the pod's supplementary group) may connect.\nsocket_mode = \"0660\"\n\n\
         [identity]\nstartup_timeout = \"120s\"\n\n[log]\nformat = \"json\"\n",
    );
    if let Some(wg) = &s.workspace_group {
        t.push_str(&format!("\n[access]\nworkspace_groups = [\"{wg}\"]\n"));
    }
    for f in &s.token_files {
        t.push_str("\n[[token]]\n");
        match f {
            TokenFile::Database => {
                let wg = s.workspace_group.as_deref().unwrap_or_default();
                t.push_str(&format!(
                    "type = \"database\"\nworkspace_group_id = \"{wg}\"\n"
                ));
            }
            TokenFile::Api => t.push_str("type = \"api\"\n"),
        }
        t.push_str(&format!(
            "sink = \"{}\"\nsink_mode = \"0640\"\n",
            token_path(*f)
        ));
    }
    if let (Some(up), Some(wg)) = (&s.database_proxy, &s.workspace_group) {
        t.push_str(&format!(
            "\n[[database_proxy]]\nlisten = \"{DATABASE_PROXY}\"\nupstream = \"{up}\"\nworkspace_group_id = \"{wg}\"\n"
        ));
    }
    if let (Some(up), Some(wg)) = (&s.data_api_proxy, &s.workspace_group) {
        t.push_str(&format!(
            "\n[[api_proxy]]\nname = \"data-api\"\nlisten = \"{DATA_API_PROXY}\"\nupstream = \"{up}\"\ntoken = \"database\"\nworkspace_group_id = \"{wg}\"\n"
        ));
    }
    t
}
