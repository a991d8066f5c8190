//! Templates, after-render actions, `serve --once` and `serve --check` through the
//! real binary against the mock cloud and auth service.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{eventually, mocks_with_expiry, s2iam_cmd as s2iam, temp_dir, uds_get, Proc};

/// The owner and group a test can give files: others when root, else its own.
fn owner_group() -> (u32, u32) {
    let meta = std::fs::metadata("/proc/self").unwrap();
    if meta.uid() == 0 {
        (65534, 65533)
    } else {
        (meta.uid(), meta.gid())
    }
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[listen]\nsocket = \"{}\"\n[cache]\nrefresh_at = 0.5\njitter = 0.0\nmin_remaining = \"1s\"\ntick = \"200ms\"\n{body}",
        dir.join("s2iam.sock").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn is_jwt(s: &str) -> bool {
    s.split('.').count() == 3 && s.starts_with("eyJ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_is_rerendered_on_refresh_atomically_with_mode_and_owner() {
    let server = mocks_with_expiry(Duration::from_secs(4)).await;
    let dir = temp_dir("tpl-refresh");
    let out = dir.join("out/my.cnf"); // out/ is created by s2iam
    let changes = dir.join("changes");
    let (uid, gid) = owner_group();
    let config = write_config(
        &dir,
        &format!(
            r#"
[[token]]
type = "database"
workspace_group_id = "wg-tpl"
[[template]]
contents = """
[client]
user = "{{{{ identity.principal }}}}"
password = "{{{{ database["wg-tpl"].token }}}}"
# expires {{{{ database["wg-tpl"].expires_at }}}}
# end
"""
destination = "{out}"
mode = "0600"
owner = {uid}
group = "{gid}"
[template.on_change]
command = ["sh", "-c", "echo \"$S2IAM_DESTINATION\" >> {changes}"]
timeout = "5s"
"#,
            out = out.display(),
            changes = changes.display()
        ),
    );
    let _child = Proc(
        s2iam(&server)
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A reader polling the file the whole time: every read is a whole file, and
    // each inode (one per write) holds one content, different from every other.
    let poll_path = out.clone();
    let poller = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(25);
        let mut by_inode: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        let mut partial = Vec::new();
        let mut reads = 0u64;
        while Instant::now() < deadline {
            if let Ok(f) = std::fs::File::open(&poll_path) {
                let ino = f.metadata().unwrap().ino();
                let text = std::io::read_to_string(f).unwrap();
                reads += 1;
                let password = text
                    .lines()
                    .find_map(|l| l.strip_prefix("password = \""))
                    .and_then(|l| l.strip_suffix('"'))
                    .unwrap_or("");
                if !(text.starts_with("[client]\n")
                    && text.ends_with("# end\n")
                    && is_jwt(password))
                {
                    partial.push(text.clone());
                }
                by_inode.entry(ino).or_default().insert(text);
                let distinct: BTreeSet<&String> = by_inode.values().flatten().collect();
                if distinct.len() >= 3 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (by_inode, partial, reads)
    });
    let (by_inode, partial, reads) = tokio::task::spawn_blocking(move || poller.join().unwrap())
        .await
        .unwrap();
    assert!(partial.is_empty(), "partial reads: {partial:?}");
    let distinct: BTreeSet<&String> = by_inode.values().flatten().collect();
    assert!(
        distinct.len() >= 3,
        "rendered and re-rendered twice on refresh ({} contents in {reads} reads)",
        distinct.len()
    );
    assert!(
        by_inode.values().all(|c| c.len() == 1),
        "a write never changes a file in place"
    );
    assert_eq!(
        by_inode.len(),
        distinct.len(),
        "written only when the output changes (one inode per content)"
    );
    let first = distinct.iter().next().unwrap();
    assert!(
        first.contains("user = \"") && !first.contains("user = \"\""),
        "{first}"
    );
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    let dir_meta = std::fs::metadata(out.parent().unwrap()).unwrap();
    assert_eq!(dir_meta.mode() & 0o777, 0o750, "created with a safe mode");
    assert!(
        eventually(Duration::from_secs(10), async || {
            std::fs::read_to_string(&changes).is_ok_and(|t| t.lines().count() >= 2)
        })
        .await,
        "the after-render command ran on each change"
    );
    let logged = std::fs::read_to_string(&changes).unwrap();
    assert!(
        logged.lines().all(|l| l == out.to_str().unwrap()),
        "{logged}"
    );
    let (status, body) = uds_get(&dir.join("s2iam.sock"), "/readyz").await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_action_delivers_sighup_to_the_pid_file_process() {
    let server = mocks_with_expiry(Duration::from_secs(3)).await;
    let dir = temp_dir("tpl-signal");
    let (pid_file, hups) = (dir.join("app.pid"), dir.join("hups"));
    // The "application": writes its pid, counts SIGHUPs. Python, not `sh`: a shell
    // cannot trap a signal that was ignored when it started (as under `nohup`),
    // while Python installs its handler whatever it inherited.
    let _app = Proc(
        Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import os, signal, time\n\
                 def hup(*_):\n    open({hups:?}, 'a').write('hup\\n')\n\
                 signal.signal(signal.SIGHUP, hup)\n\
                 open({pid:?}, 'w').write(str(os.getpid()))\n\
                 while True:\n    time.sleep(0.05)\n",
                hups = hups.display().to_string(),
                pid = pid_file.display().to_string(),
            ))
            .spawn()
            .unwrap(),
    );
    assert!(eventually(Duration::from_secs(5), async || pid_file.exists()).await);
    let sink = dir.join("db.jwt");
    let config = write_config(
        &dir,
        &format!(
            "[[token]]\ntype = \"database\"\nworkspace_group_id = \"wg-sig\"\nsink = \"{}\"\nsink_mode = \"0600\"\n[token.on_change]\nsignal = \"SIGHUP\"\npid_file = \"{}\"\n",
            sink.display(),
            pid_file.display()
        ),
    );
    let _child = Proc(
        s2iam(&server)
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(20), async || {
            std::fs::read_to_string(&hups).is_ok_and(|t| t.lines().count() >= 2)
        })
        .await,
        "SIGHUP delivered on the first write and on a refresh"
    );
    assert!(is_jwt(&std::fs::read_to_string(&sink).unwrap()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_every_file_and_exits_0_or_fails_with_reasons() {
    let server = mocks_with_expiry(Duration::from_secs(3600)).await;
    let dir = temp_dir("once");
    let (sink, env_file) = (dir.join("db.jwt"), dir.join("app.env"));
    let config = write_config(
        &dir,
        &format!(
            "[[token]]\ntype = \"database\"\nworkspace_group_id = \"wg-once\"\nsink = \"{}\"\n[[token]]\ntype = \"api\"\n[[template]]\ncontents = \"S2_PASSWORD={{{{ database['wg-once'].token }}}}\\nS2_API={{{{ api.token }}}}\\n\"\ndestination = \"{}\"\n",
            sink.display(),
            env_file.display()
        ),
    );
    let out = s2iam(&server)
        .args(["serve", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(is_jwt(&std::fs::read_to_string(&sink).unwrap()));
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        env.starts_with("S2_PASSWORD=eyJ") && env.contains("\nS2_API=eyJ"),
        "{env}"
    );
    assert!(!dir.join("s2iam.sock").exists(), "--once serves nothing");
    assert!(!stderr.contains("eyJ"), "no token in the logs");
    // Issue 23 (11): each file is reported once (stdout and the log together).
    let all = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    for file in [&sink, &env_file] {
        let name = file.display().to_string();
        assert_eq!(all.matches(&name).count(), 1, "{name}: {all}");
    }
    assert_eq!(server.auth().records().len(), 2, "one exchange per token");

    // The same with the auth service failing: non-zero, the reasons, no files.
    std::fs::remove_file(&sink).unwrap();
    std::fs::remove_file(&env_file).unwrap();
    server.auth().update(|c| {
        c.return_error = true;
        c.error_code = 403;
        c.error_message = "workspace group not allowed".into();
    });
    let started = Instant::now();
    let out = s2iam(&server)
        .args(["serve", "--exit-after-auth", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("token database/wg-once")
            && stderr.contains("token api")
            && stderr.contains("403"),
        "{stderr}"
    );
    assert!(!sink.exists() && !env_file.exists());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_template_errors_with_line_and_column() {
    let server = mocks_with_expiry(Duration::from_secs(3600)).await;
    let dir = temp_dir("tpl-check");
    let good = write_config(
        &dir,
        &format!(
            "[[token]]\ntype = \"api\"\n[[template]]\ncontents = \"t={{{{ api.token }}}}\"\ndestination = \"{}\"\n",
            dir.join("t").display()
        ),
    );
    let out = s2iam(&server)
        .args(["serve", "--check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 template(s) rendered"), "{stdout}");
    assert!(!stdout.contains("placeholder\":"), "{stdout}");
    assert!(!dir.join("t").exists(), "--check writes nothing");

    let cases = [
        // An unknown variable on line 2.
        (
            "[client]\\npassword={{ database['wg-x'].token }}",
            "template[0], line 2, column 21",
            "undefined",
        ),
        // A syntax error on line 3.
        ("a\\nb\\n{% if %}", "line 3", "syntax error"),
    ];
    for (template, location, kind) in cases {
        let bad = write_config(
            &dir,
            &format!(
                "[[token]]\ntype = \"api\"\n[[template]]\ncontents = \"{template}\"\ndestination = \"{}\"\n",
                dir.join("t").display()
            ),
        );
        let out = s2iam(&server)
            .args(["serve", "--check", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(location) && stderr.contains(kind),
            "{stderr}"
        );
    }
    // A destination whose directory cannot exist.
    let bad = write_config(
        &dir,
        "[[token]]\ntype = \"api\"\n[[template]]\ncontents = \"x\"\ndestination = \"/nonexistent/deeper/t\"\n",
    );
    let out = s2iam(&server)
        .args(["serve", "--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    // Refused at start too, before listening.
    let out = s2iam(&server)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(server.auth().records().len(), 0, "nothing fetched");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_or_hanging_actions_never_block_refresh_and_run_again() {
    let server = mocks_with_expiry(Duration::from_secs(3)).await;
    let dir = temp_dir("tpl-actions");
    let (hanging_out, failing_out) = (dir.join("hanging"), dir.join("failing"));
    let attempts = dir.join("attempts");
    let config = write_config(
        &dir,
        &format!(
            r#"
[log]
format = "json"
[[token]]
type = "database"
workspace_group_id = "wg-act"
[[template]]
contents = "{{{{ database['wg-act'].token }}}}"
destination = "{hanging}"
[template.on_change]
command = ["sleep", "60"]
timeout = "30s"
[[template]]
contents = "{{{{ database['wg-act'].token }}}}"
destination = "{failing}"
[template.on_change]
command = ["sh", "-c", "echo x >> {attempts}; exit 3"]
"#,
            hanging = hanging_out.display(),
            failing = failing_out.display(),
            attempts = attempts.display()
        ),
    );
    let mut child = Proc(
        s2iam(&server)
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The hanging action of the first write is still running while the tokens
    // keep being refreshed and both files rewritten.
    let mut seen = BTreeSet::new();
    let ok = eventually(Duration::from_secs(20), async || {
        if let Ok(t) = std::fs::read_to_string(&hanging_out) {
            seen.insert(t);
        }
        seen.len() >= 3 && std::fs::read_to_string(&attempts).is_ok_and(|t| t.lines().count() >= 3)
    })
    .await;
    assert!(
        ok,
        "{} contents, attempts {:?}",
        seen.len(),
        std::fs::read_to_string(&attempts).ok()
    );
    assert_eq!(
        std::fs::read_to_string(&failing_out).unwrap(),
        std::fs::read_to_string(&hanging_out).unwrap(),
        "both templates follow the same token"
    );
    // SIGTERM: s2iam exits 143 and takes its still-running action with it (the
    // stderr pipe, which the action shares, closes).
    assert!(Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(
        logs.contains("after-render action failed") && logs.contains("exit status: 3"),
        "the failure is logged with its exit status"
    );
    assert!(!logs.contains("eyJ"), "no token in the logs");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the hanging action did not outlive s2iam"
    );
    server.shutdown().await;
}

/// Issue 18, item 8: no symlink anywhere on a destination's path below its root
/// (`/` unless the template sets `root`). A symlinked parent or grandparent
/// directory is refused by `--check` and by the write, and nothing lands where
/// the symlink points; a template whose `root` is the symlink trusts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinked_directories_below_the_root_are_refused() {
    let server = mocks_with_expiry(Duration::from_secs(3600)).await;
    let dir = temp_dir("tpl-symlink");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("sub")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("link")).unwrap();
    let template = |destination: &Path, root: Option<&Path>| {
        let root = root.map_or(String::new(), |r| format!("root = \"{}\"\n", r.display()));
        format!(
            "[[template]]\ncontents = \"x={{{{ api.token }}}}\"\ndestination = \"{}\"\n{root}",
            destination.display()
        )
    };
    let parent = template(&dir.join("link/app.env"), None);
    let grandparent = template(&dir.join("link/sub/app.env"), None);
    let sink = format!("sink = \"{}\"\n", dir.join("link/sub/db.jwt").display());
    for (what, body) in [
        ("parent", parent.as_str()),
        ("grandparent", grandparent.as_str()),
        ("token sink", sink.as_str()),
    ] {
        let config = write_config(&dir, &format!("[[token]]\ntype = \"api\"\n{body}"));
        for mode in ["--check", "--once"] {
            let out = s2iam(&server)
                .args(["serve", mode, "--config"])
                .arg(&config)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{what} {mode}: {stderr}");
            assert!(
                stderr.contains(&format!("{} is a symlink", dir.join("link").display())),
                "{what} {mode}: {stderr}"
            );
        }
    }
    let written = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(written(&elsewhere), BTreeSet::from(["sub".to_string()]));
    assert!(written(&elsewhere.join("sub")).is_empty());

    // The same symlink as the template's root: the administrator trusts it.
    let trusted = template(&dir.join("link/sub/app.env"), Some(&dir.join("link")));
    let config = write_config(&dir, &format!("[[token]]\ntype = \"api\"\n{trusted}"));
    let out = s2iam(&server)
        .args(["serve", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = std::fs::read_to_string(elsewhere.join("sub/app.env")).unwrap();
    assert!(rendered.starts_with("x=eyJ"), "{rendered}");
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}
