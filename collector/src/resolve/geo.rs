//! GeoIP/ASN enrichment from MaxMind DB (MMDB) files, read with the `maxminddb` crate.
//!
//! Two optional databases, configured under `geoip:`:
//! - a **country** database: ip-location-db's layout (`{"country_code": "NL"}`, e.g. the npm
//!   package `@ip-location-db/geo-whois-asn-country-mmdb`) or MaxMind's
//!   (`{"country": {"iso_code": "NL"}}`, GeoLite2-Country/City; `registered_country` is the
//!   fallback). Both field paths are tried, in that order.
//! - an **ASN** database: `{"autonomous_system_number": 13335, ...}` (MaxMind GeoLite2-ASN and
//!   ip-location-db's `*-asn-mmdb` files share it).
//!
//! Results become the bounded labels `country` (ISO 3166-1 alpha-2, upper case, or `unknown`)
//! and `asn` (`AS13335`, or `unknown`) on `vpslens_unregistered_requests_total`; the aggregator
//! caps both (`limits.countries`, `limits.asns`; overflow → `other`). With
//! `geoip.node_labels: true`, each registered node's first registry address is looked up once
//! per registry snapshot and its `country`/`asn` are added to `vpslens_node_info`.
//!
//! Lookups happen once per *unregistered* line, through a per-tailer [`GeoCache`] (direct-mapped,
//! fixed size) so a busy scanner costs one hash probe per line. A configured database that
//! cannot be opened is a start-up error ([`GeoError`]): silently running without the labels an
//! operator asked for would hide the misconfiguration.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use maxminddb::{PathElement, Reader};
use thiserror::Error;

use super::Registry;

/// Label value for an address the database does not cover (or no database).
pub const UNKNOWN: &str = "unknown";

/// Where the databases are and what to do with them (`geoip:` in the config file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoSettings {
    /// Country MMDB path.
    pub country_database: Option<PathBuf>,
    /// ASN MMDB path.
    pub asn_database: Option<PathBuf>,
    /// Add `country`/`asn` of each node's first address to `vpslens_node_info`.
    pub node_labels: bool,
}

impl GeoSettings {
    /// True when at least one database is configured.
    pub fn enabled(&self) -> bool {
        self.country_database.is_some() || self.asn_database.is_some()
    }
}

/// A database could not be opened.
#[derive(Debug, Error)]
pub enum GeoError {
    /// Missing, unreadable or not an MMDB file.
    #[error("geoip.{key} {path}: cannot open MaxMind DB: {source}")]
    Open {
        /// Config key (`country_database` or `asn_database`).
        key: &'static str,
        /// File path.
        path: PathBuf,
        /// Reader error.
        source: maxminddb::MaxMindDbError,
    },
}

/// Geo attributes of one address, as small copyable values (no strings on the hot path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct GeoLabels {
    /// ISO 3166-1 alpha-2 code, upper-case ASCII; `None` = unknown.
    pub country: Option<[u8; 2]>,
    /// Autonomous system number; `None` = unknown.
    pub asn: Option<u32>,
}

impl GeoLabels {
    /// The `country` label value (`NL` or `unknown`).
    pub fn country_label(&self) -> &str {
        self.country
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
            .unwrap_or(UNKNOWN)
    }

    /// The `asn` label value (`AS13335` or `unknown`), without allocating.
    pub fn asn_label(&self) -> AsnText {
        AsnText::new(self.asn)
    }
}

/// An `asn` label value on the stack: `AS` and up to ten digits, or `unknown`.
#[derive(Debug, Clone, Copy)]
pub struct AsnText {
    buf: [u8; 12],
    len: usize,
}

impl AsnText {
    /// Formats `AS<n>`, or `unknown` for `None`.
    pub fn new(asn: Option<u32>) -> AsnText {
        let mut t = AsnText {
            buf: [0; 12],
            len: 0,
        };
        let Some(mut n) = asn else {
            t.buf[..UNKNOWN.len()].copy_from_slice(UNKNOWN.as_bytes());
            t.len = UNKNOWN.len();
            return t;
        };
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        t.buf[..2].copy_from_slice(b"AS");
        let d = &digits[i..];
        t.buf[2..2 + d.len()].copy_from_slice(d);
        t.len = 2 + d.len();
        t
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or(UNKNOWN)
    }
}

/// Country field paths tried in order: ip-location-db, MaxMind, MaxMind's registration country.
const COUNTRY_PATHS: [&[PathElement<'static>]; 3] = [
    &[PathElement::Key("country_code")],
    &[PathElement::Key("country"), PathElement::Key("iso_code")],
    &[
        PathElement::Key("registered_country"),
        PathElement::Key("iso_code"),
    ],
];
const ASN_PATH: &[PathElement<'static>] = &[PathElement::Key("autonomous_system_number")];

/// Per-registry-snapshot node labels: the snapshot they were computed for and one entry per
/// node (in [`Registry::nodes`] order).
type NodeLabelCache = Option<(Arc<Registry>, Arc<Vec<GeoLabels>>)>;

/// Open databases. Immutable after start-up; shared by the tailer and the exporter.
pub struct Geo {
    country: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
    node_labels: bool,
    node_cache: Mutex<NodeLabelCache>,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo")
            .field("country", &self.country.as_ref().map(|r| r.metadata()))
            .field("asn", &self.asn.as_ref().map(|r| r.metadata()))
            .field("node_labels", &self.node_labels)
            .finish_non_exhaustive()
    }
}

fn open(key: &'static str, path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    Reader::open_readfile(path).map_err(|source| GeoError::Open {
        key,
        path: path.to_path_buf(),
        source,
    })
}

impl Geo {
    /// Opens the configured databases; `Ok(None)` when none is configured.
    ///
    /// # Errors
    /// [`GeoError::Open`] for a configured database that is missing or not an MMDB file.
    pub fn open(s: &GeoSettings) -> Result<Option<Arc<Geo>>, GeoError> {
        if !s.enabled() {
            return Ok(None);
        }
        let country = match &s.country_database {
            Some(p) => Some(open("country_database", p)?),
            None => None,
        };
        let asn = match &s.asn_database {
            Some(p) => Some(open("asn_database", p)?),
            None => None,
        };
        for (what, r) in [("country", &country), ("asn", &asn)] {
            if let Some(r) = r {
                tracing::info!(
                    database = what,
                    database_type = %r.metadata().database_type,
                    build_epoch = r.metadata().build_epoch,
                    "GeoIP database loaded"
                );
            }
        }
        Ok(Some(Arc::new(Geo {
            country,
            asn,
            node_labels: s.node_labels,
            node_cache: Mutex::new(None),
        })))
    }

    /// True when a country database is loaded (the `country` label is exported).
    pub fn has_country(&self) -> bool {
        self.country.is_some()
    }

    /// True when an ASN database is loaded (the `asn` label is exported).
    pub fn has_asn(&self) -> bool {
        self.asn.is_some()
    }

    /// Looks `ip` up in both databases. Absent entries, unknown layouts and lookup errors
    /// (e.g. IPv6 in an IPv4-only database) give `None` fields.
    pub fn lookup(&self, ip: IpAddr) -> GeoLabels {
        let ip = ip.to_canonical();
        GeoLabels {
            country: self.country.as_ref().and_then(|r| country_of(r, ip)),
            asn: self.asn.as_ref().and_then(|r| asn_of(r, ip)),
        }
    }

    /// Node labels for `registry` (one per node, in [`Registry::nodes`] order): the lookup of
    /// each node's first address, computed once per registry snapshot. `None` unless
    /// `geoip.node_labels` is on.
    pub fn node_labels(&self, registry: &Arc<Registry>) -> Option<Arc<Vec<GeoLabels>>> {
        if !self.node_labels {
            return None;
        }
        let mut cache = crate::lock_unpoisoned(&self.node_cache);
        if let Some((reg, labels)) = cache.as_ref() {
            if Arc::ptr_eq(reg, registry) {
                return Some(labels.clone());
            }
        }
        let labels: Arc<Vec<GeoLabels>> = Arc::new(
            registry
                .nodes()
                .iter()
                .map(|n| {
                    n.addresses
                        .first()
                        .map_or_else(GeoLabels::default, |net| self.lookup(net.network()))
                })
                .collect(),
        );
        *cache = Some((registry.clone(), labels.clone()));
        Some(labels)
    }
}

fn country_of(r: &Reader<Vec<u8>>, ip: IpAddr) -> Option<[u8; 2]> {
    let res = r.lookup(ip).ok()?;
    if !res.has_data() {
        return None;
    }
    COUNTRY_PATHS.iter().find_map(|path| {
        let code: &str = res.decode_path(path).ok().flatten()?;
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => None,
        }
    })
}

fn asn_of(r: &Reader<Vec<u8>>, ip: IpAddr) -> Option<u32> {
    let res = r.lookup(ip).ok()?;
    if !res.has_data() {
        return None;
    }
    match res.decode_path::<u32>(ASN_PATH) {
        Ok(n) => n,
        // Some converters store the number as a string.
        Err(_) => res
            .decode_path::<&str>(ASN_PATH)
            .ok()
            .flatten()
            .and_then(|s| s.trim_start_matches("AS").parse().ok()),
    }
}

/// Slots in a [`GeoCache`] (a power of two).
pub const CACHE_SLOTS: usize = 4096;

/// A fixed-size, direct-mapped cache of recent lookups (address → labels), owned by one
/// tailer: repeated unregistered clients cost one hash probe; a flood of distinct addresses
/// costs one lookup each and never grows memory.
#[derive(Debug, Clone)]
pub struct GeoCache {
    slots: Vec<Option<(IpAddr, GeoLabels)>>,
}

impl Default for GeoCache {
    fn default() -> Self {
        GeoCache {
            slots: vec![None; CACHE_SLOTS],
        }
    }
}

impl GeoCache {
    /// The labels of `ip`, from the cache or `geo`.
    #[inline]
    pub fn lookup(&mut self, geo: &Geo, ip: IpAddr) -> GeoLabels {
        let mut h = rustc_hash::FxHasher::default();
        ip.hash(&mut h);
        // Fx's low bits are weak; take the high ones.
        let slot = (h.finish() >> 52) as usize & (CACHE_SLOTS - 1);
        if let Some(Some((cached, labels))) = self.slots.get(slot) {
            if *cached == ip {
                return *labels;
            }
        }
        let labels = geo.lookup(ip);
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some((ip, labels));
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpslens_testkit::mmdb::{self, CountryLayout, MmdbWriter, Value};

    fn geo(dir: &Path, layout: CountryLayout, node_labels: bool) -> Arc<Geo> {
        let (country, asn) = mmdb::write_test_databases(dir, layout).unwrap();
        Geo::open(&GeoSettings {
            country_database: Some(country),
            asn_database: Some(asn),
            node_labels,
        })
        .unwrap()
        .unwrap()
    }

    fn labels(g: &Geo, ip: &str) -> (String, String) {
        let l = g.lookup(ip.parse().unwrap());
        (
            l.country_label().to_owned(),
            l.asn_label().as_str().to_owned(),
        )
    }

    #[test]
    fn both_country_layouts_and_asn_resolve_v4_and_v6() {
        for layout in [CountryLayout::IpLocationDb, CountryLayout::MaxMind] {
            let dir = tempfile::tempdir().unwrap();
            let g = geo(dir.path(), layout, false);
            assert!(g.has_country() && g.has_asn());
            let want = |c: &str, a: &str| (c.to_owned(), a.to_owned());
            assert_eq!(
                labels(&g, "198.51.100.7"),
                want("NL", "AS64500"),
                "{layout:?}"
            );
            assert_eq!(labels(&g, "203.0.113.200"), want("JP", "AS64501"));
            assert_eq!(labels(&g, "2001:db8:1::10"), want("DE", "AS64502"));
            assert_eq!(labels(&g, "::ffff:198.51.100.7"), want("NL", "AS64500"));
            assert_eq!(labels(&g, "192.0.2.1"), want("unknown", "unknown"));
            assert_eq!(labels(&g, "2001:db9::1"), want("unknown", "unknown"));
        }
    }

    #[test]
    fn the_real_reader_verifies_the_test_databases() {
        let dir = tempfile::tempdir().unwrap();
        let (country, asn) =
            mmdb::write_test_databases(dir.path(), CountryLayout::MaxMind).unwrap();
        for p in [country, asn] {
            let r = Reader::open_readfile(&p).unwrap();
            r.verify().unwrap();
            assert_eq!(r.metadata().ip_version, 6);
            let hit = r.lookup("198.51.100.1".parse().unwrap()).unwrap();
            assert_eq!(hit.network().unwrap().to_string(), "198.51.100.0/24");
        }
    }

    #[test]
    fn odd_values_are_unknown_not_labels() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = MmdbWriter::new("odd");
        c.insert(
            "192.0.2.0/25",
            Value::map([("country_code", Value::from("Netherlands"))]),
        )
        .unwrap();
        c.insert(
            "192.0.2.128/25",
            Value::map([("country_code", Value::from("nl"))]),
        )
        .unwrap();
        c.insert("198.51.100.0/24", Value::map([("city", Value::from("x"))]))
            .unwrap();
        let cp = dir.path().join("c.mmdb");
        c.write(&cp).unwrap();
        let mut a = MmdbWriter::new("odd-asn");
        a.insert(
            "192.0.2.0/24",
            Value::map([("autonomous_system_number", Value::from("AS64511"))]),
        )
        .unwrap();
        let ap = dir.path().join("a.mmdb");
        a.write(&ap).unwrap();
        let g = Geo::open(&GeoSettings {
            country_database: Some(cp),
            asn_database: Some(ap),
            node_labels: false,
        })
        .unwrap()
        .unwrap();
        assert_eq!(labels(&g, "192.0.2.1").0, "unknown", "not a 2-letter code");
        assert_eq!(labels(&g, "192.0.2.200"), ("NL".into(), "AS64511".into()));
        assert_eq!(labels(&g, "198.51.100.1").0, "unknown", "no country field");
    }

    #[test]
    fn missing_or_broken_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.mmdb");
        let e = Geo::open(&GeoSettings {
            country_database: Some(missing),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("geoip.country_database"), "{e}");
        assert!(e.to_string().contains("nope.mmdb"), "{e}");
        let junk = dir.path().join("junk.mmdb");
        std::fs::write(&junk, b"not a database").unwrap();
        let e = Geo::open(&GeoSettings {
            asn_database: Some(junk),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("geoip.asn_database"), "{e}");
        assert!(Geo::open(&GeoSettings::default()).unwrap().is_none());
    }

    #[test]
    fn node_labels_are_computed_once_per_registry() {
        let dir = tempfile::tempdir().unwrap();
        let g = geo(dir.path(), CountryLayout::IpLocationDb, true);
        let reg = Arc::new(
            Registry::from_bytes(
                Path::new("r.yaml"),
                b"nodes:\n  - {name: a, addresses: [198.51.100.9, 2001:db8::1]}\n  - {name: b, addresses: [\"2001:db8:5::/64\"]}\n  - {name: c, addresses: [192.0.2.1]}\n",
            )
            .unwrap(),
        );
        let l = g.node_labels(&reg).unwrap();
        let got: Vec<(&str, String)> = l
            .iter()
            .map(|x| (x.country_label(), x.asn_label().as_str().to_owned()))
            .collect();
        assert_eq!(
            got,
            [
                ("NL", "AS64500".to_owned()),
                ("DE", "AS64502".to_owned()),
                ("unknown", "unknown".to_owned())
            ]
        );
        assert!(Arc::ptr_eq(&l, &g.node_labels(&reg).unwrap()), "cached");
        let dir2 = tempfile::tempdir().unwrap();
        assert!(geo(dir2.path(), CountryLayout::MaxMind, false)
            .node_labels(&reg)
            .is_none());
    }

    #[test]
    fn asn_text_and_cache() {
        assert_eq!(AsnText::new(Some(0)).as_str(), "AS0");
        assert_eq!(AsnText::new(Some(u32::MAX)).as_str(), "AS4294967295");
        assert_eq!(AsnText::new(None).as_str(), "unknown");
        let dir = tempfile::tempdir().unwrap();
        let g = geo(dir.path(), CountryLayout::IpLocationDb, false);
        let mut c = GeoCache::default();
        for _ in 0..3 {
            for i in 0..10_000u32 {
                let ip = IpAddr::from([198, 51, (i >> 8) as u8, i as u8]);
                let want = g.lookup(ip);
                assert_eq!(c.lookup(&g, ip), want);
            }
        }
        assert_eq!(c.slots.len(), CACHE_SLOTS);
    }
}
