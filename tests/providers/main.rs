//! The library's cloud providers against the mock cloud on loopback, one module per
//! provider or concern: detection across all of them (`detect`), AWS (`aws`, its
//! endpoints and clock skew), GCP (`gcp`, Google credential files in
//! `gcp_federation`) and Azure (`azure`). One test binary, so one link.

#[path = "../common/mod.rs"]
mod common;

mod aws;
mod aws_clock_skew;
mod aws_endpoints;
mod azure;
mod detect;
mod gcp;
mod gcp_federation;
