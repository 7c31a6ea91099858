//! Export stage: exposition text, Istio/Kiali shapes, HTTP endpoints, the fleet view and page,
//! and summaries.

pub mod exposition;
pub mod fleet;
pub mod http;
pub mod istio;
pub mod metrics;
pub mod page;
pub mod scrape;
pub mod server;
pub mod summary;
