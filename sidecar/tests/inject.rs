//! `s2iam inject` and the admission webhook's mutation on every workload kind
//! (sidecar/tests/data/kube/workloads.yaml): what is added, idempotence, byte-identical
//! pass-through, updates, the generated config, and AdmissionReviews (create and
//! update, with and without the annotation, with s2iam already present) whose
//! JSONPatch applied to the object equals `inject`'s output.

use base64::Engine;
use s2iam::env::Env;
use s2iam_sidecar::config::{ServeConfig, ServeOverrides};
use s2iam_sidecar::kube::admission::review;
use s2iam_sidecar::kube::yaml::inject_stream;
use s2iam_sidecar::kube::{Options, Outcome};
use serde_json::{json, Value};

const WORKLOADS: &str = include_str!("data/kube/workloads.yaml");

fn docs(text: &str) -> Vec<Value> {
    text.split("\n---")
        .filter_map(|d| yaml_serde::from_str::<Option<Value>>(d).unwrap())
        .collect()
}

fn options() -> Options {
    Options {
        image: "registry.example.com/s2iam:9.9.9".into(),
        update: false,
    }
}

fn pod_spec(o: &Value) -> &Value {
    match o["kind"].as_str().unwrap() {
        "Pod" => &o["spec"],
        "CronJob" => &o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &o["spec"]["template"]["spec"],
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().map_or(vec![], |l| {
        l.iter().map(|x| x["name"].as_str().unwrap()).collect()
    })
}

fn env_of<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

fn injected() -> (String, Vec<Outcome>) {
    let (out, report) = inject_stream(WORKLOADS, &options()).unwrap();
    (out, report.outcomes)
}

#[test]
fn every_kind_is_injected() {
    let (out, outcomes) = injected();
    use Outcome::*;
    assert_eq!(
        outcomes,
        vec![
            Injected,
            Injected,
            Injected,
            Injected,
            Injected,
            Injected,
            Injected,
            Injected,
            NotAnnotated,
            NotAnnotated,
            NotAnnotated
        ]
    );
    let objects = docs(&out);
    let mut kinds = vec![];
    for o in &objects {
        let items = if o["kind"] == "List" {
            o["items"].as_array().unwrap().clone()
        } else {
            vec![o.clone()]
        };
        for o in items {
            let spec = pod_spec(&o);
            let name = o["metadata"]["name"].as_str().unwrap();
            if name.ends_with("-plain") || spec.is_null() {
                assert!(
                    names(&spec["initContainers"]).iter().all(|n| *n != "s2iam"),
                    "{name}"
                );
                continue;
            }
            kinds.push(o["kind"].as_str().unwrap().to_string());
            let sidecar = &spec["initContainers"][0];
            assert_eq!(sidecar["name"], "s2iam", "{name}: the sidecar comes first");
            assert_eq!(sidecar["restartPolicy"], "Always", "{name}: native sidecar");
            for (probe, path) in [
                ("startupProbe", "/startupz"),
                ("readinessProbe", "/readyz"),
                ("livenessProbe", "/healthz"),
            ] {
                let cmd = sidecar[probe]["exec"]["command"].as_array().unwrap();
                assert_eq!(cmd.last().unwrap(), path, "{name} {probe}");
                assert!(
                    cmd.contains(&json!("/run/s2iam/s2iam.sock")),
                    "{name} {probe}"
                );
            }
            let sc = &sidecar["securityContext"];
            assert_eq!(sc["runAsNonRoot"], true);
            assert_eq!(sc["readOnlyRootFilesystem"], true);
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
            assert!(sidecar["resources"]["limits"]["memory"].is_string());
            let vol = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "s2iam-run")
                .unwrap();
            assert_eq!(vol["emptyDir"]["medium"], "Memory", "{name}");
            assert!(
                spec["securityContext"]["supplementalGroups"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(65532)),
                "{name}"
            );
            let template_annotations = match o["kind"].as_str().unwrap() {
                "Pod" => &o["metadata"]["annotations"],
                "CronJob" => {
                    &o["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"]
                }
                _ => &o["spec"]["template"]["metadata"]["annotations"],
            };
            assert_eq!(
                template_annotations["s2iam.singlestore.com/status"], "injected",
                "{name}"
            );
            let image = sidecar["image"].as_str().unwrap();
            if name == "replicaset-annotated" {
                assert!(
                    image.contains("@sha256:fedcba"),
                    "the image annotation wins"
                );
            } else {
                assert_eq!(image, "registry.example.com/s2iam:9.9.9");
            }
            match name {
                "deployment-annotated" => {
                    let app = &spec["containers"][0];
                    let metrics = &spec["containers"][1];
                    assert_eq!(
                        env_of(app, "S2IAM_SOCKET"),
                        Some("/custom.sock"),
                        "the app's own value is kept"
                    );
                    assert_eq!(
                        env_of(app, "S2IAM_API_TOKEN_FILE"),
                        Some("/run/s2iam/api.jwt")
                    );
                    assert_eq!(
                        env_of(app, "S2IAM_DATA_API_URL"),
                        Some("http://127.0.0.1:8081")
                    );
                    assert!(
                        metrics.get("env").is_none() && metrics.get("volumeMounts").is_none(),
                        "only the named container"
                    );
                    assert_eq!(names(&spec["initContainers"]), vec!["s2iam", "migrate"]);
                    assert_eq!(
                        spec["securityContext"]["supplementalGroups"],
                        json!([2000, 65532])
                    );
                    assert_eq!(
                        spec["securityContext"]["fsGroup"], 10001,
                        "nothing else of the pod changes"
                    );
                    assert_eq!(sidecar["resources"]["limits"]["memory"], "96Mi");
                }
                "statefulset-annotated" => {
                    assert_eq!(
                        sidecar["args"],
                        json!([
                            "serve",
                            "--exit-zero-on-sigterm",
                            "--config",
                            "/etc/s2iam/config.toml"
                        ])
                    );
                    assert!(env_of(sidecar, "S2IAM_CONFIG_TOML").is_none());
                    let cm = spec["volumes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|v| v["name"] == "s2iam-config")
                        .unwrap();
                    assert_eq!(cm["configMap"]["name"], "s2iam-config");
                }
                "daemonset-annotated" => {
                    assert!(spec["containers"][0].get("env").is_none(), "env: false")
                }
                "pod-annotated" | "job-annotated" => {
                    let app = &spec["containers"][0];
                    assert_eq!(env_of(app, "SINGLESTORE_HOST"), Some("127.0.0.1"));
                    assert_eq!(
                        env_of(app, "S2IAM_DATABASE_TOKEN_FILE"),
                        Some("/run/s2iam/database.jwt")
                    );
                    let mount = &app["volumeMounts"][0];
                    assert_eq!(
                        (mount["mountPath"].as_str(), mount["readOnly"].as_bool()),
                        (Some("/run/s2iam"), Some(true))
                    );
                }
                _ => {}
            }
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "CronJob",
            "DaemonSet",
            "Deployment",
            "Deployment",
            "Job",
            "Pod",
            "ReplicaSet",
            "StatefulSet"
        ]
    );
}

#[test]
fn the_generated_config_is_a_valid_sidecar_config() {
    let (out, _) = injected();
    let mut checked = 0;
    for o in docs(&out) {
        let items = if o["kind"] == "List" {
            o["items"].as_array().unwrap().clone()
        } else {
            vec![o]
        };
        for o in items {
            let Some(sidecar) = pod_spec(&o)["initContainers"].get(0).cloned() else {
                continue;
            };
            let Some(text) = env_of(&sidecar, "S2IAM_CONFIG_TOML") else {
                continue;
            };
            let c = ServeConfig::from_toml(
                text,
                &Env::from_pairs::<&str, &str>([]),
                &ServeOverrides::default(),
            )
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", o["metadata"]["name"]));
            assert_eq!(
                c.listen.socket.as_deref(),
                Some(std::path::Path::new("/run/s2iam/s2iam.sock"))
            );
            assert_eq!(c.listen.socket_mode, 0o660);
            assert!(!c.tokens.is_empty());
            if o["metadata"]["name"] == "pod-annotated" {
                assert_eq!(c.database_proxies.len(), 1);
                assert_eq!(c.access.workspace_groups, vec!["wg-1".to_string()]);
            }
            if o["metadata"]["name"] == "deployment-annotated" {
                assert_eq!(c.tokens.len(), 2);
                assert_eq!(c.api_proxies.len(), 1);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 7);
}

#[test]
fn a_second_pass_changes_nothing_and_plain_documents_keep_their_bytes() {
    let (out, _) = injected();
    let (again, report) = inject_stream(&out, &options()).unwrap();
    assert_eq!(again, out, "byte-identical second pass");
    assert!(!report.outcomes.contains(&Outcome::Injected));
    assert_eq!(
        report
            .outcomes
            .iter()
            .filter(|o| **o == Outcome::AlreadyPresent)
            .count(),
        8
    );
    let plain_start = WORKLOADS.find("# Not annotated").unwrap();
    let plain = &WORKLOADS[plain_start..];
    assert!(
        out.ends_with(plain),
        "the un-annotated documents are copied byte for byte"
    );
    assert!(
        out.starts_with("# Every workload kind"),
        "an injected document keeps the comment lines it starts with"
    );
    assert!(out.contains("---\n# A List: one item annotated, one not.\napiVersion: v1\n"));
}

#[test]
fn update_replaces_what_s2iam_added_and_only_that() {
    let (out, _) = injected();
    let update = Options {
        update: true,
        ..options()
    };
    let (updated, report) = inject_stream(&out, &update).unwrap();
    assert_eq!(
        docs(&updated),
        docs(&out),
        "updating with the same annotations gives the same objects"
    );
    assert_eq!(
        report
            .outcomes
            .iter()
            .filter(|o| **o == Outcome::Injected)
            .count(),
        8
    );
    // A changed annotation: the update follows it; without --update nothing moves.
    let changed = out.replacen(
        "s2iam.singlestore.com/database-proxy: svc-1.example.com:3306",
        "s2iam.singlestore.com/database-proxy: svc-9.example.com:3306",
        1,
    );
    let (kept, _) = inject_stream(&changed, &options()).unwrap();
    assert_eq!(kept, changed);
    let (redone, _) = inject_stream(&changed, &update).unwrap();
    let pod = &docs(&redone)[0];
    let config = env_of(&pod["spec"]["initContainers"][0], "S2IAM_CONFIG_TOML").unwrap();
    assert!(
        config.contains("svc-9.example.com:3306") && !config.contains("svc-1."),
        "{config}"
    );
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        vec!["s2iam"],
        "one sidecar, not two"
    );
}

#[test]
fn a_hand_written_s2iam_container_is_left_alone() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: mine\n  annotations: {s2iam.singlestore.com/inject: \"true\"}\nspec:\n  containers: [{name: app, image: a}, {name: s2iam, image: b}]\n";
    let (out, report) = inject_stream(text, &options()).unwrap();
    assert_eq!(out, text);
    assert_eq!(report.outcomes, vec![Outcome::AlreadyPresent]);
}

#[test]
fn bad_annotations_fail_with_the_document_and_annotation() {
    let text = "kind: ConfigMap\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  annotations: {s2iam.singlestore.com/inject: \"true\", s2iam.singlestore.com/containers: nosuch}\nspec:\n  containers: [{name: app, image: a}]\n";
    let e = inject_stream(text, &options()).unwrap_err().to_string();
    assert!(
        e.contains("document 2") && e.contains("Pod bad") && e.contains("nosuch"),
        "{e}"
    );
}

/// RFC 6902 add/replace/remove as the API server applies them (written here, apart
/// from the code under test).
fn apply(mut doc: Value, ops: &[Value]) -> Value {
    for op in ops {
        let path = op["path"].as_str().unwrap();
        let (parent, last) = path.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent}"));
        match (op["op"].as_str().unwrap(), target) {
            ("add", Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
            ("add", Value::Array(a)) => a.insert(last.parse().unwrap(), op["value"].clone()),
            ("replace", Value::Array(a)) => a[last.parse::<usize>().unwrap()] = op["value"].clone(),
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last, op["value"].clone());
            }
            ("remove", Value::Object(m)) => {
                m.remove(&last).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    doc
}

fn admission(op: &str, object: &Value, old: Option<&Value>) -> Value {
    let kind = object["kind"].as_str().unwrap();
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("uid-{kind}"), "kind": {"group": "", "version": "v1", "kind": kind},
                    "operation": op, "object": object, "oldObject": old, "dryRun": false}
    });
    let (answer, _) = review(&serde_json::to_vec(&body).unwrap(), &options()).unwrap();
    assert_eq!(answer["response"]["uid"], format!("uid-{kind}"));
    assert_eq!(answer["response"]["allowed"], true);
    answer["response"].clone()
}

fn patched(object: &Value, response: &Value) -> Value {
    match response["patch"].as_str() {
        None => object.clone(),
        Some(b64) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let ops: Vec<Value> = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            )
            .unwrap();
            assert!(!ops.is_empty());
            apply(object.clone(), &ops)
        }
    }
}

#[test]
fn admission_reviews_patch_to_exactly_what_inject_writes() {
    let inputs = docs(WORKLOADS);
    let (out, _) = injected();
    let outputs = docs(&out);
    assert_eq!(inputs.len(), outputs.len());
    for (input, expected) in inputs.iter().zip(&outputs) {
        let name = format!("{} {}", input["kind"], input["metadata"]["name"]);
        for op in ["CREATE", "UPDATE"] {
            let response = admission(op, input, Some(input));
            assert_eq!(&patched(input, &response), expected, "{op} {name}");
            // Reinvocation, or an update of an injected object: nothing more to do.
            let again = admission(op, expected, Some(expected));
            assert!(
                again.get("patch").is_none(),
                "{op} {name}: a second pass patched {again}"
            );
        }
        let changed = input != expected;
        assert_eq!(
            changed,
            !name.contains("plain")
                && !["ConfigMap", "NetworkPolicy"].contains(&input["kind"].as_str().unwrap()),
            "{name}"
        );
    }
}
