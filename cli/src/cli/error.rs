//! The command line's errors and the exit code each maps to.

/// Errors of the command line, each with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] s2iam_sidecar::config::ConfigError),
    #[error(transparent)]
    Serve(#[from] s2iam_sidecar::serve::ServeError),
    #[cfg(feature = "dev")]
    #[error(transparent)]
    Dev(#[from] s2iam_sidecar::serve::dev::DevError),
    #[error(transparent)]
    Proxy(#[from] s2iam_sidecar::dbproxy::standalone::StandaloneError),
    #[error(transparent)]
    Probe(#[from] s2iam_sidecar::sidecar_client::socket::ProbeError),
    #[error(transparent)]
    Once(#[from] s2iam_sidecar::serve::once::OnceError),
    #[error(transparent)]
    Flow(#[from] s2iam::client::Error),
    #[error(transparent)]
    Aws(#[from] s2iam_sidecar::sidecar_client::aws_credentials::LocalError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Run(#[from] s2iam_sidecar::run::RunError),
    #[error("{0} check(s) failed (see the report above)")]
    DoctorFailed(usize),
    #[error(transparent)]
    Inject(#[from] s2iam_sidecar::kube::yaml::YamlError),
    #[error(transparent)]
    Webhook(#[from] s2iam_sidecar::kube::webhook::WebhookError),
}

impl CliError {
    /// 1 for every failure, except `s2iam run`'s own (`env`'s convention: 125,
    /// 126, 127). A malformed command line exits with 2 from clap, before this.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Run(e) => e.exit_code(),
            _ => 1,
        }
    }
}
