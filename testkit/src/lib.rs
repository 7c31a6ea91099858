//! Test harness for vpslens.
//!
//! Everything here runs real processes on loopback only (127.0.0.1):
//!
//! * [`envoy::EnvoyGateway`] — a real Envoy configured like an Istio ingress
//!   gateway behind an AWS NLB (PROXY protocol listener filter,
//!   `use_remote_address: true`, Istio's default access-log format).
//! * [`upstream::XboardStub`] — a stub Xboard panel (`/api/v1/server/UniProxy/*`)
//!   whose status and latency can be forced per request by headers.
//! * [`client`] — sends HTTP/1.1 requests prefixed with a PROXY protocol v1
//!   header carrying a fake client address.
//! * [`prometheus::Prometheus`], [`alertmanager::Alertmanager`] — real
//!   Prometheus/Alertmanager servers with temp storage.
//! * [`vpslens::Vpslens`] — runs the collector binary with captured output.
//! * [`chromium`] — headless Chromium: a page's DOM after load, screenshots.
//! * [`mmdb`] — a minimal MaxMind DB writer for GeoIP test databases.
//! * [`process`] — [`process::ManagedServer`] (the servers above), child guards, free
//!   ports, bounded waits.
//! * [`fixtures`] — the deterministic traffic plan behind `fixtures/` and
//!   the code that checks a log against `expected.json`.
//!
//! Every wait is bounded and every spawned child is killed on drop. Missing
//! binaries produce an error telling the user to run `scripts/install-deps.sh`.
#![forbid(unsafe_code)]

pub mod alertmanager;
pub mod bins;
pub mod chromium;
pub mod client;
pub mod envoy;
pub mod fixtures;
pub mod http;
pub mod mmdb;
pub mod process;
pub mod prometheus;
pub mod upstream;
pub mod vpslens;

pub use alertmanager::Alertmanager;
pub use client::{send, send_many, TestRequest};
pub use envoy::{EnvoyGateway, EnvoyOptions, LogFormat};
pub use process::{free_port, wait_until, ChildGuard, ManagedServer};
pub use prometheus::{promtool_check_metrics, Prometheus, PrometheusOptions, Sample};
pub use upstream::XboardStub;
pub use vpslens::Vpslens;
