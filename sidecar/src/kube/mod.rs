//! Kubernetes: s2iam added to a workload by one annotation.
//!
//! The mutation is one function on JSON values ([`inject::mutate`]), used by both
//! doors into it, so they cannot disagree:
//!
//! - `s2iam inject` ([`yaml`]): manifests in, manifests out; documents without the
//!   annotation are passed through as their original bytes;
//! - `s2iam webhook` ([`webhook`]): a mutating admission webhook; the AdmissionReview
//!   ([`admission`]) is answered with the JSONPatch ([`patch`]) from the object as
//!   sent to the object as mutated.
//!
//! What the annotations mean is in [`annotations`]. This module imports only `util`
//! (and, for the webhook's TLS, rustls); nothing of the sidecar.

pub mod admission;
pub mod annotations;
pub mod inject;
pub mod patch;
pub mod webhook;
pub mod yaml;

pub use inject::{mutate, InjectError, Options, Outcome};
