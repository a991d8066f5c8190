//! The stderr logger each command installs first: a default filter that
//! `S2IAM_LOG` overrides (e.g. `S2IAM_LOG=s2iam=trace`), colour only on a terminal
//! and without `NO_COLOR`.

use s2iam::env::Env;
use tracing_subscriber::EnvFilter;

/// Warnings only, or debug with `--verbose`.
pub fn init(verbose: bool) {
    init_with_default(if verbose { "s2iam=debug,info" } else { "warn" });
}

/// Errors only (`s2iam doctor` says in its report what warnings would).
pub fn init_quiet() {
    init_with_default("error");
}

/// `default` unless `S2IAM_LOG` says otherwise.
pub fn init_with_default(default: &str) {
    let filter = Env::real()
        .get("S2IAM_LOG")
        .unwrap_or_else(|| default.to_string());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi())
        .with_env_filter(EnvFilter::new(filter))
        .try_init();
}

/// The sidecar's logger: the level and format (text or JSON) of its config.
/// With `once`, the report on stdout names every file written, so the
/// renderer's per-file lines stay out of the log (each file is reported once).
pub fn init_serve(config: &s2iam_sidecar::config::ServeConfig, once: bool) {
    let level = if once {
        format!("{},s2iam_sidecar::render=warn", config.log.level)
    } else {
        config.log.level.clone()
    };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi())
        .with_env_filter(filter);
    let _ = match config.log.format {
        s2iam_sidecar::config::LogFormat::Json => builder.json().try_init(),
        s2iam_sidecar::config::LogFormat::Text => builder.try_init(),
    };
}

fn ansi() -> bool {
    s2iam::logging::ansi_on_stderr(Env::real().is_set("NO_COLOR"))
}
