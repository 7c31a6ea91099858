//! Istio's Envoy cluster names: `direction|port|subset|host`.
//!
//! Istio names outbound clusters `outbound|<port>|<subset>|<service FQDN>` (istio/istio
//! `pkg/config/model` `BuildSubsetKey`), e.g. `outbound|80||xboard.airport-prod.svc.cluster.local`.
//! `%UPSTREAM_CLUSTER_RAW%` prints that name unmodified (Istio ≥ 1.25); the older
//! `%UPSTREAM_CLUSTER%` may print an alt_stat_name instead, which this parser rejects.

/// A parsed Istio cluster name, borrowing from the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IstioCluster<'a> {
    /// `outbound`, `inbound`, …
    pub direction: &'a str,
    /// Service port.
    pub port: u16,
    /// DestinationRule subset (often empty).
    pub subset: &'a str,
    /// Service host, e.g. `xboard.airport-prod.svc.cluster.local`.
    pub host: &'a str,
}

impl<'a> IstioCluster<'a> {
    /// Parses `direction|port|subset|host`; `None` for anything else (e.g. `BlackHoleCluster`).
    ///
    /// ```
    /// use vpslens_parsers::cluster::IstioCluster;
    /// let c = IstioCluster::parse("outbound|80||xboard.airport-prod.svc.cluster.local").unwrap();
    /// assert_eq!((c.service_name(), c.namespace()), ("xboard", Some("airport-prod")));
    /// assert!(IstioCluster::parse("BlackHoleCluster").is_none());
    /// ```
    pub fn parse(s: &'a str) -> Option<Self> {
        let mut it = s.split('|');
        let direction = it.next()?;
        let port = it.next()?.parse().ok()?;
        let subset = it.next()?;
        let host = it.next()?;
        if it.next().is_some() || direction.is_empty() || host.is_empty() {
            return None;
        }
        Some(IstioCluster {
            direction,
            port,
            subset,
            host,
        })
    }

    /// First DNS label of the host (Istio's `destination_service_name`).
    pub fn service_name(&self) -> &'a str {
        self.host.split('.').next().unwrap_or(self.host)
    }

    /// Second DNS label when the host is a Kubernetes service FQDN (`name.ns.svc.…`).
    pub fn namespace(&self) -> Option<&'a str> {
        let mut labels = self.host.split('.');
        let _name = labels.next()?;
        let ns = labels.next()?;
        (labels.next() == Some("svc")).then_some(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants() {
        let c = IstioCluster::parse("outbound|8080|v2|api.prod.svc.cluster.local").unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.subset, "v2");
        assert_eq!(c.namespace(), Some("prod"));
        let c = IstioCluster::parse("outbound|443||example.com").unwrap();
        assert_eq!((c.service_name(), c.namespace()), ("example", None));
        for bad in [
            "",
            "a|b|c|d",
            "outbound|80|",
            "outbound|80||",
            "|80||x",
            "a|1|b|c|d",
        ] {
            assert!(IstioCluster::parse(bad).is_none(), "{bad}");
        }
    }
}
