//! The library against the mock cloud on loopback, one module per provider or
//! concern: detection across all of them (`detect`), AWS (`aws`, its endpoints and
//! clock skew), GCP (`gcp`, Google credential files in `gcp_federation`), Azure
//! (`azure`), the whole flow through `Client` (`client`) and outbound proxies
//! (`proxy`). One test binary, so one link.

#[path = "../../../tests/common/mod.rs"]
mod common;

mod aws;
mod aws_clock_skew;
mod aws_endpoints;
mod azure;
mod client;
mod detect;
mod gcp;
mod gcp_federation;
mod proxy;
