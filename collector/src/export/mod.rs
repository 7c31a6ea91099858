//! Export stage: exposition text, Istio/Kiali shapes, HTTP endpoints and summaries.

pub mod exposition;
pub mod http;
pub mod istio;
pub mod metrics;
pub mod scrape;
pub mod summary;
