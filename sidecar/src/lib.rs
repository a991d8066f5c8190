//! The s2iam sidecar, on the [`s2iam`] library: the configuration, the one listener
//! every local surface accepts through, the token API (`s2iam serve`), the API and
//! database proxies, templates, `s2iam run`, Kubernetes injection, and the clients
//! other processes use to ask a running sidecar.
//!
//! | step | module |
//! |---|---|
//! | the sidecar's configuration | [`config`] |
//! | the one door of every local surface | [`listener`] |
//! | the token API and the API proxies (`s2iam serve`) | [`serve`], [`config::api_proxy`], [`serve::api_proxy`] |
//! | connect without a token (database proxy, `s2iam proxy`) | [`dbproxy`] |
//! | files rendered from tokens, after-render actions | [`render`] |
//! | a command run with tokens in its environment (`s2iam run`) | [`run`] |
//! | other processes asking a running sidecar (`s2iam probe`, AWS) | [`sidecar_client`] |
//! | Kubernetes: `s2iam inject`, `s2iam webhook` | [`kube`] |
//!
//! The crates, the module map and the import rules are in `docs/architecture.md`
//! in the repository. Nothing here is imported by the library; the `s2iam` binary
//! (the `s2iam-cli` crate) imports this crate as `s2iam_sidecar::`.

pub mod config;
pub mod dbproxy;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod kube;
pub mod listener;
pub mod render;
pub mod run;
pub mod serve;
pub mod sidecar_client;
