//! Request path → bounded route label, plus the XrayR/V2bX identity parameters.
//!
//! XrayR and V2bX call Xboard's `UniProxy` API with `?node_id=N&node_type=T&token=SECRET` on every
//! request. The query string is attacker-controlled and carries a panel-wide secret, so:
//! - the route label is chosen from a configured, finite list of templates (else `other`);
//! - `node_id` (a number) and `node_type` (from a fixed list) are extracted as values, never text;
//! - the `token` value is never looked at, copied or returned.

use rustc_hash::FxHashMap as HashMap;
use thiserror::Error;

/// Label value for paths that match no template (and for a missing path).
pub const OTHER_ROUTE: &str = "other";

/// The routes XrayR/V2bX call on Xboard (`api/v1/server/UniProxy/*`), used when no templates are
/// configured.
pub const DEFAULT_TEMPLATES: &[&str] = &[
    "/api/v1/server/UniProxy/config",
    "/api/v1/server/UniProxy/user",
    "/api/v1/server/UniProxy/push",
    "/api/v1/server/UniProxy/alive",
    "/api/v1/server/UniProxy/alivelist",
    "/api/v1/server/UniProxy/status",
];

/// Node types XrayR/V2bX send (`node_type=`); anything else is reported as `other`.
pub const NODE_TYPES: &[&str] = &[
    "vmess",
    "vless",
    "trojan",
    "shadowsocks",
    "hysteria",
    "hysteria2",
    "tuic",
    "anytls",
    "socks",
    "naive",
    "http",
    "mieru",
    "v2ray",
];

/// A route template is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    /// Templates must start with `/`.
    #[error("route template `{0}` must start with '/'")]
    NotAbsolute(String),
    /// `**` may only be the last segment.
    #[error("route template `{0}`: '**' must be the last segment")]
    InnerDoubleStar(String),
    /// A template may not contain `?`.
    #[error("route template `{0}` must not contain a query string")]
    HasQuery(String),
    /// More templates than a route id can index (u16).
    #[error("too many route templates (max 65535)")]
    TooMany,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Any,
    /// `**`: any remaining segments (zero or more).
    Rest,
}

#[derive(Debug, Clone)]
struct Template {
    label: String,
    segments: Vec<Segment>,
}

/// Index of a matched template in its [`RouteTable`]; [`RouteId::OTHER`] for no match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub u16);

impl RouteId {
    /// The `other` route.
    pub const OTHER: RouteId = RouteId(u16::MAX);
}

/// What a request path says, without the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTarget {
    /// The matched template, or [`RouteId::OTHER`].
    pub route: RouteId,
    /// `node_id` query parameter when it is a decimal number that fits `u32`.
    pub node_id: Option<u32>,
    /// A `node_id` parameter was present but is not such a number (`1abc`, `-1`, `""`,
    /// `99999999999999999999`): it cannot be any registry id.
    pub node_id_invalid: bool,
    /// `node_type` query parameter as an index into [`NODE_TYPES`]; `Some(None)`-like "present but
    /// unknown" is represented by [`NodeType::Other`].
    pub node_type: Option<NodeType>,
}

/// A bounded `node_type` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// Index into [`NODE_TYPES`].
    Known(u8),
    /// Present but not one of [`NODE_TYPES`].
    Other,
}

impl NodeType {
    /// The label value: a [`NODE_TYPES`] entry or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Known(i) => NODE_TYPES.get(usize::from(i)).copied().unwrap_or("other"),
            NodeType::Other => "other",
        }
    }
}

/// An ordered list of route templates. The first match wins.
///
/// Template syntax: `/`-separated segments; a literal segment matches exactly (case-sensitive),
/// `*` matches one non-empty segment, a final `**` matches the rest. The label of a match is the
/// template text itself, so the label set is exactly the configured list plus `other`.
///
/// ```
/// use vpslens_parsers::route::{RouteTable, OTHER_ROUTE};
/// let t = RouteTable::new(["/api/v1/server/UniProxy/*", "/static/**"]).unwrap();
/// let hit = t.classify("/api/v1/server/UniProxy/user?node_id=7&node_type=vless&token=s3cr3t");
/// assert_eq!(t.label(hit.route), "/api/v1/server/UniProxy/*");
/// assert_eq!(hit.node_id, Some(7));
/// assert_eq!(hit.node_type.unwrap().as_str(), "vless");
/// assert_eq!(t.label(t.classify("/wp-login.php").route), OTHER_ROUTE);
/// ```
#[derive(Debug, Clone)]
pub struct RouteTable {
    templates: Vec<Template>,
    /// Wildcard-free templates by their exact path → index (the first such template wins).
    exact: HashMap<String, u16>,
    /// Indexes of templates with `*` or `**`, in order.
    wild: Vec<u16>,
}

impl Default for RouteTable {
    fn default() -> Self {
        // The defaults are valid templates; parsing them cannot fail.
        RouteTable::new(DEFAULT_TEMPLATES.iter().copied()).unwrap_or(RouteTable {
            templates: Vec::new(),
            exact: HashMap::default(),
            wild: Vec::new(),
        })
    }
}

impl RouteTable {
    /// Builds a table from templates.
    ///
    /// # Errors
    /// [`RouteError`] for an invalid template.
    pub fn new<'s>(templates: impl IntoIterator<Item = &'s str>) -> Result<Self, RouteError> {
        let mut out = Vec::new();
        for t in templates {
            if !t.starts_with('/') {
                return Err(RouteError::NotAbsolute(t.to_owned()));
            }
            if t.contains('?') {
                return Err(RouteError::HasQuery(t.to_owned()));
            }
            let parts: Vec<&str> = t[1..].split('/').collect();
            let mut segments = Vec::with_capacity(parts.len());
            for (i, p) in parts.iter().enumerate() {
                segments.push(match *p {
                    "*" => Segment::Any,
                    "**" if i + 1 == parts.len() => Segment::Rest,
                    "**" => return Err(RouteError::InnerDoubleStar(t.to_owned())),
                    lit => Segment::Literal(lit.to_owned()),
                });
            }
            out.push(Template {
                label: t.to_owned(),
                segments,
            });
        }
        if out.len() >= usize::from(u16::MAX) {
            return Err(RouteError::TooMany);
        }
        let mut exact = HashMap::default();
        let mut wild = Vec::new();
        for (i, t) in out.iter().enumerate() {
            let i = u16::try_from(i).map_err(|_| RouteError::TooMany)?;
            if t.segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
                exact.entry(t.label.clone()).or_insert(i);
            } else {
                wild.push(i);
            }
        }
        Ok(RouteTable {
            templates: out,
            exact,
            wild,
        })
    }

    /// Number of templates (the label set has one more value: `other`).
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// True when no template is configured (every path is `other`).
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The label value of `id`.
    pub fn label(&self, id: RouteId) -> &str {
        self.templates
            .get(usize::from(id.0))
            .map_or(OTHER_ROUTE, |t| t.label.as_str())
    }

    /// Every label value, templates first, then `other`.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.templates
            .iter()
            .map(|t| t.label.as_str())
            .chain(std::iter::once(OTHER_ROUTE))
    }

    /// Classifies a logged path (`%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`, query included). The
    /// query string is dropped before matching; only `node_id` and `node_type` are read from it.
    pub fn classify(&self, path: &str) -> RequestTarget {
        let (path_only, query) = match memchr::memchr(b'?', path.as_bytes()) {
            // `?` is ASCII: both sides are on char boundaries.
            Some(q) => (path.get(..q).unwrap_or(path), path.get(q + 1..)),
            None => (path, None),
        };
        // A wildcard-free template matches exactly its own text: one hash lookup. A wildcard
        // template listed before that hit (or any, without a hit) still gets its turn, so the
        // first matching template wins as documented.
        let exact = self.exact.get(path_only).copied();
        // Only wildcard templates are matched segment by segment (none in the defaults).
        let wild = self
            .wild
            .iter()
            .take_while(|&&w| exact.is_none_or(|e| w < e))
            .find(|&&w| {
                self.templates
                    .get(usize::from(w))
                    .is_some_and(|t| matches(&t.segments, path_only))
            });
        let route = wild.copied().or(exact).map_or(RouteId::OTHER, RouteId);
        let (node_id, node_id_invalid, node_type) =
            query.map_or((None, false, None), identity_params);
        RequestTarget {
            route,
            node_id,
            node_id_invalid,
            node_type,
        }
    }
}

/// The template rule: literal segments equal, `*` one non-empty segment, a final `**` the rest.
fn matches(segments: &[Segment], path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let mut parts = rest.split('/');
    for seg in segments {
        match seg {
            Segment::Rest => return true,
            Segment::Any => match parts.next() {
                Some(p) if !p.is_empty() => {}
                _ => return false,
            },
            Segment::Literal(l) => {
                if parts.next() != Some(l.as_str()) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

/// Reads `node_id` and `node_type` from a query string; every other parameter (notably `token`)
/// is skipped without being inspected. The first occurrence of each key wins.
/// Returns the parsed `node_id`, whether a `node_id` was present but unparseable, and the
/// `node_type`.
fn identity_params(query: &str) -> (Option<u32>, bool, Option<NodeType>) {
    let mut node_id = None;
    let mut node_type = None;
    let mut seen_id = false;
    let mut seen_type = false;
    let mut rest = query;
    loop {
        // `&` is ASCII: both sides of it are char boundaries.
        let (pair, next) = match memchr::memchr(b'&', rest.as_bytes()) {
            Some(at) => (rest.get(..at).unwrap_or(""), rest.get(at + 1..)),
            None => (rest, None),
        };
        if let Some(v) = pair.strip_prefix("node_id=") {
            if !seen_id {
                seen_id = true;
                node_id = crate::json::parse_decimal(v).and_then(|n| u32::try_from(n).ok());
            }
        } else if let Some(v) = pair.strip_prefix("node_type=") {
            if !seen_type {
                seen_type = true;
                node_type = Some(
                    NODE_TYPES
                        .iter()
                        .position(|t| t.eq_ignore_ascii_case(v))
                        .and_then(|i| u8::try_from(i).ok())
                        .map_or(NodeType::Other, NodeType::Known),
                );
            }
        }
        match next {
            Some(n) if !(seen_id && seen_type) => rest = n,
            _ => break,
        }
    }
    (node_id, seen_id && node_id.is_none(), node_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented rule, written plainly: the first template (in order) whose segments match.
    fn first_match_reference(t: &RouteTable, path: &str) -> RouteId {
        let path_only = path.split_once('?').map_or(path, |(p, _)| p);
        t.templates
            .iter()
            .position(|tpl| matches(&tpl.segments, path_only))
            .and_then(|i| u16::try_from(i).ok())
            .map_or(RouteId::OTHER, RouteId)
    }

    #[test]
    fn exact_map_and_wildcards_keep_first_match_order() {
        let segs = ["a", "b", "", "*", "**", "api"];
        let tables = [
            vec!["/a/*", "/a/b"],
            vec!["/a/b", "/a/*"],
            vec!["/a/b", "/a/b", "/**"],
            vec!["/**", "/a/b"],
            vec!["/a/b/**", "/a/b", "/*/b", "/a"],
        ];
        // Every path of up to 4 segments over a small alphabet, some with 13+ segments.
        let mut paths = vec![String::new(), "/".to_owned(), "a".to_owned()];
        for n in 1..=4u32 {
            for code in 0..6usize.pow(n) {
                let mut p = String::new();
                let mut c = code;
                for _ in 0..n {
                    p.push('/');
                    p.push_str(segs[c % 6]);
                    c /= 6;
                }
                paths.push(p.clone());
                paths.push(format!("{p}?node_id=1"));
            }
        }
        paths.push("/a".repeat(13));
        paths.push(format!("/a/b{}", "/x".repeat(12)));
        for templates in tables {
            let t = RouteTable::new(templates.iter().copied()).unwrap();
            for p in &paths {
                assert_eq!(
                    t.classify(p).route,
                    first_match_reference(&t, p),
                    "{templates:?} {p:?}"
                );
            }
        }
    }

    #[test]
    fn default_templates_match_xrayr_calls() {
        let t = RouteTable::default();
        for p in DEFAULT_TEMPLATES {
            let q = format!("{p}?node_id=3&node_type=trojan&token=FAKE-TOKEN-do-not-use");
            let hit = t.classify(&q);
            assert_eq!(t.label(hit.route), *p);
            assert_eq!(hit.node_id, Some(3));
            assert_eq!(hit.node_type.map(NodeType::as_str), Some("trojan"));
        }
    }

    #[test]
    fn unknown_and_hostile_paths_collapse_to_other() {
        let t = RouteTable::default();
        for p in [
            "",
            "/",
            "relative/path",
            "/api/v1/server/UniProxy/config/extra",
            "/api/v1/server/uniproxy/config",
            "/api/v1/server/UniProxy/config/",
            "/admin/login?x=1",
            "/a/very/long/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(t.label(t.classify(p).route), OTHER_ROUTE, "{p}");
        }
    }

    #[test]
    fn wildcards() {
        let t = RouteTable::new(["/a/*/c", "/b/**", "/x"]).unwrap();
        assert_eq!(t.label(t.classify("/a/zz/c").route), "/a/*/c");
        assert_eq!(t.label(t.classify("/a//c").route), OTHER_ROUTE);
        assert_eq!(t.label(t.classify("/b").route), "/b/**");
        assert_eq!(t.label(t.classify("/b/1/2/3").route), "/b/**");
        assert_eq!(t.label(t.classify("/x?y").route), "/x");
        assert_eq!(
            t.labels().collect::<Vec<_>>(),
            ["/a/*/c", "/b/**", "/x", "other"]
        );
    }

    #[test]
    fn bad_templates_are_rejected() {
        assert!(matches!(
            RouteTable::new(["a"]),
            Err(RouteError::NotAbsolute(_))
        ));
        assert!(matches!(
            RouteTable::new(["/a/**/b"]),
            Err(RouteError::InnerDoubleStar(_))
        ));
        assert!(matches!(
            RouteTable::new(["/a?b=1"]),
            Err(RouteError::HasQuery(_))
        ));
    }

    #[test]
    fn identity_params_are_bounded() {
        let t = RouteTable::default();
        let hit = t.classify("/x?token=node_id=9&node_id=99999999999&node_type=EVIL%20TYPE");
        assert_eq!(hit.node_id, None, "overflowing node_id is dropped");
        assert_eq!(hit.node_type, Some(NodeType::Other));
        let hit = t.classify("/x?node_id=5&node_id=6&node_type=VLESS");
        assert_eq!(hit.node_id, Some(5), "first occurrence wins");
        assert_eq!(hit.node_type.map(NodeType::as_str), Some("vless"));
        let hit = t.classify("/x?node_id=-1");
        assert_eq!((hit.node_id, hit.node_type), (None, None));
        assert!(hit.node_id_invalid);
        for bad in ["1abc", "99999999999999999999", "", "+1"] {
            let hit = t.classify(&format!("/x?node_id={bad}&token=t"));
            assert_eq!((hit.node_id, hit.node_id_invalid), (None, true), "{bad}");
        }
        let hit = t.classify("/x?node_id=7");
        assert_eq!((hit.node_id, hit.node_id_invalid), (Some(7), false));
        assert!(!t.classify("/x?node_type=vless").node_id_invalid);
    }
}
