//! The typed access-log record shared by the JSON and TEXT parsers.

use std::borrow::Cow;

/// One Envoy HTTP access-log entry, reduced to the fields vpslens uses.
///
/// Field names follow Istio's access-log keys (`EnvoyJSONLogFormatIstio` in istio/istio
/// `pilot/pkg/model/telemetry_logging.go`), which name Envoy's command operators
/// (<https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage>).
/// Strings borrow from the input line unless JSON escapes forced a copy. Envoy's "no value"
/// markers (`null`, `"-"`, `""`) become `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessRecord<'a> {
    /// `%START_TIME%` as milliseconds since the Unix epoch (UTC).
    pub start_time_ms: i64,
    /// `%REQ(:METHOD)%`, e.g. `GET`.
    pub method: Option<Cow<'a, str>>,
    /// `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`: path **with** query string, exactly as logged.
    /// It may contain the panel `token`; callers must only pass it to
    /// [`crate::route::RouteTable::classify`], which drops the query string.
    pub path: Option<Cow<'a, str>>,
    /// `%RESPONSE_CODE%`; `0` when no response was sent (downstream went away).
    pub response_code: u16,
    /// `%RESPONSE_FLAGS%`: comma-joined short flags (`UF,URX`); `None` when Envoy printed `-`.
    pub response_flags: Option<Cow<'a, str>>,
    /// `%BYTES_RECEIVED%`: request body bytes.
    pub bytes_received: u64,
    /// `%BYTES_SENT%`: response body bytes.
    pub bytes_sent: u64,
    /// `%DURATION%`: milliseconds from first request byte to last response byte.
    pub duration_ms: Option<u64>,
    /// `%REQ(X-FORWARDED-FOR)%` after Envoy appended the remote address (`use_remote_address`).
    /// `None` also when the TEXT format's quoted fields were ambiguous (see [`crate::text`]).
    pub x_forwarded_for: Option<Cow<'a, str>>,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: `ip:port` or `[v6]:port` of the (PROXY-protocol) client.
    pub downstream_remote_address: Option<Cow<'a, str>>,
    /// `%UPSTREAM_CLUSTER_RAW%` (or `%UPSTREAM_CLUSTER%`), e.g.
    /// `outbound|80||xboard.airport-prod.svc.cluster.local`.
    pub upstream_cluster: Option<Cow<'a, str>>,
}
