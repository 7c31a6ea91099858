//! A minimal MaxMind DB (MMDB) writer for tests, so GeoIP tests need no downloaded database.
//!
//! Implements the parts of the [MaxMind DB format 2.0] that GeoIP/ASN databases use: an IPv6
//! search tree (IPv4 networks live under `::/96`, where readers look for them) with 24- or
//! 32-bit records, the 16-byte data-section separator, a deduplicated data section (strings,
//! unsigned integers, booleans, arrays, maps) and the metadata map after
//! `\xAB\xCD\xEFMaxMind.com`. Networks must not overlap (an error says which do).
//!
//! ```
//! use vpslens_testkit::mmdb::{MmdbWriter, Value};
//! let mut w = MmdbWriter::new("vpslens-test-country");
//! w.insert("198.51.100.0/24", Value::map([("country_code", Value::from("NL"))])).unwrap();
//! let bytes = w.to_bytes().unwrap();
//! assert!(bytes.windows(14).any(|b| b == b"\xAB\xCD\xEFMaxMind.com"));
//! ```
//!
//! [MaxMind DB format 2.0]: https://maxmind.github.io/MaxMind-DB/

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The metadata marker that starts the metadata section.
pub const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

/// A data-section value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// UTF-8 string (type 2).
    String(String),
    /// uint16 (type 5).
    U16(u16),
    /// uint32 (type 6).
    U32(u32),
    /// uint64 (type 9).
    U64(u64),
    /// Boolean (type 14).
    Bool(bool),
    /// Array (type 11).
    Array(Vec<Value>),
    /// Map with string keys (type 7), written in the given order.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// A map from `(key, value)` pairs.
    pub fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::U32(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Empty,
    Node(u32),
    Data(usize),
}

/// Builds an MMDB file in memory.
#[derive(Debug, Clone)]
pub struct MmdbWriter {
    database_type: String,
    nodes: Vec<[Record; 2]>,
    values: Vec<Value>,
    value_ids: BTreeMap<Value, usize>,
    build_epoch: u64,
}

impl MmdbWriter {
    /// An empty IPv6 database (IPv4 networks are stored under `::/96`) of `database_type`.
    pub fn new(database_type: &str) -> Self {
        MmdbWriter {
            database_type: database_type.to_owned(),
            nodes: vec![[Record::Empty; 2]],
            values: Vec::new(),
            value_ids: BTreeMap::new(),
            build_epoch: 1_700_000_000,
        }
    }

    /// Maps a network (`a.b.c.d/len`, `v6/len`, or a bare address) to `value`.
    ///
    /// # Errors
    /// A bad network, a `/0` network, or one overlapping a network inserted before.
    pub fn insert(&mut self, network: &str, value: Value) -> Result<()> {
        let (addr, len) = parse_network(network)?;
        let mut node = 0usize;
        for depth in 0..len {
            let bit = usize::from((addr >> (127 - depth)) & 1 == 1);
            let last = depth + 1 == len;
            let rec = self.nodes[node][bit];
            match (rec, last) {
                (Record::Empty, true) => {
                    // Overlaps fail before any node is created, so nothing is left half-done.
                    let id = match self.value_ids.get(&value) {
                        Some(&id) => id,
                        None => {
                            let id = self.values.len();
                            self.values.push(value.clone());
                            self.value_ids.insert(value.clone(), id);
                            id
                        }
                    };
                    self.nodes[node][bit] = Record::Data(id);
                }
                (Record::Empty, false) => {
                    let next = u32::try_from(self.nodes.len()).context("too many nodes")?;
                    self.nodes.push([Record::Empty; 2]);
                    self.nodes[node][bit] = Record::Node(next);
                    node = next as usize;
                }
                (Record::Node(n), false) => node = n as usize,
                (Record::Node(_) | Record::Data(_), _) => {
                    bail!("{network} overlaps a network inserted before")
                }
            }
        }
        Ok(())
    }

    /// The database bytes.
    ///
    /// # Errors
    /// When the tree or data section outgrows 32-bit records.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let node_count = u32::try_from(self.nodes.len()).context("too many nodes")?;
        let mut data = Vec::new();
        let mut offsets = Vec::with_capacity(self.values.len());
        for v in &self.values {
            offsets.push(u64::try_from(data.len())?);
            encode(v, &mut data)?;
        }
        let resolve = |r: Record| -> u64 {
            match r {
                Record::Empty => u64::from(node_count),
                Record::Node(n) => u64::from(n),
                Record::Data(i) => u64::from(node_count) + 16 + offsets[i],
            }
        };
        let max = u64::from(node_count) + 16 + u64::try_from(data.len())?;
        let record_size: u16 = if max < (1 << 24) { 24 } else { 32 };
        if max > u64::from(u32::MAX) {
            bail!("database too large for 32-bit records");
        }
        let mut out = Vec::new();
        for n in &self.nodes {
            for r in n {
                let v = resolve(*r);
                let b = v.to_be_bytes();
                match record_size {
                    24 => out.extend_from_slice(&b[5..8]),
                    _ => out.extend_from_slice(&b[4..8]),
                }
            }
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&data);
        out.extend_from_slice(METADATA_MARKER);
        let meta = Value::map([
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(self.build_epoch)),
            ("database_type", Value::from(self.database_type.as_str())),
            (
                "description",
                Value::map([("en", Value::from("vpslens test database"))]),
            ),
            ("ip_version", Value::U16(6)),
            ("languages", Value::Array(vec![Value::from("en")])),
            ("node_count", Value::U32(node_count)),
            ("record_size", Value::U16(record_size)),
        ]);
        encode(&meta, &mut out)?;
        Ok(out)
    }

    /// Writes the database to `path`.
    ///
    /// # Errors
    /// I/O or [`MmdbWriter::to_bytes`] errors.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()?).with_context(|| format!("write {}", path.display()))
    }
}

/// `(address as u128 in the IPv6 tree, prefix length in that tree)`.
fn parse_network(s: &str) -> Result<(u128, u32)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (
            a,
            Some(
                l.parse::<u32>()
                    .with_context(|| format!("bad prefix in {s}"))?,
            ),
        ),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .with_context(|| format!("bad address in {s}"))?;
    let (bits, len) = match ip {
        IpAddr::V4(a) => {
            let len = len.unwrap_or(32);
            anyhow::ensure!(len <= 32, "prefix too long in {s}");
            (u128::from(u32::from(a)), 96 + len)
        }
        IpAddr::V6(a) => {
            let len = len.unwrap_or(128);
            anyhow::ensure!(len <= 128, "prefix too long in {s}");
            (u128::from(a), len)
        }
    };
    anyhow::ensure!(len > 0, "a /0 network cannot be stored");
    let mask = if len == 128 {
        u128::MAX
    } else {
        !(u128::MAX >> len)
    };
    Ok((bits & mask, len))
}

fn control(type_num: u8, size: usize, out: &mut Vec<u8>) -> Result<()> {
    let (first_type, ext) = if type_num <= 7 {
        (type_num << 5, None)
    } else {
        (0, Some(type_num - 7))
    };
    let (size_bits, extra): (u8, Vec<u8>) = if size < 29 {
        (u8::try_from(size)?, Vec::new())
    } else if size < 29 + 256 {
        (29, vec![u8::try_from(size - 29)?])
    } else if size < 285 + 65_536 {
        (30, u16::try_from(size - 285)?.to_be_bytes().to_vec())
    } else if size < 65_821 + (1 << 24) {
        (
            31,
            u32::try_from(size - 65_821)?.to_be_bytes()[1..].to_vec(),
        )
    } else {
        bail!("value too large");
    };
    out.push(first_type | size_bits);
    if let Some(e) = ext {
        out.push(e);
    }
    out.extend_from_slice(&extra);
    Ok(())
}

fn uint(type_num: u8, v: u64, out: &mut Vec<u8>) -> Result<()> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    control(type_num, 8 - skip, out)?;
    out.extend_from_slice(&b[skip..]);
    Ok(())
}

fn encode(v: &Value, out: &mut Vec<u8>) -> Result<()> {
    match v {
        Value::String(s) => {
            control(2, s.len(), out)?;
            out.extend_from_slice(s.as_bytes());
        }
        Value::U16(n) => uint(5, u64::from(*n), out)?,
        Value::U32(n) => uint(6, u64::from(*n), out)?,
        Value::U64(n) => uint(9, *n, out)?,
        Value::Bool(b) => control(14, usize::from(*b), out)?,
        Value::Array(items) => {
            control(11, items.len(), out)?;
            for i in items {
                encode(i, out)?;
            }
        }
        Value::Map(pairs) => {
            control(7, pairs.len(), out)?;
            for (k, v) in pairs {
                encode(&Value::String(k.clone()), out)?;
                encode(v, out)?;
            }
        }
    }
    Ok(())
}

/// Field layout of a country database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountryLayout {
    /// `{"country_code": "NL"}` (ip-location-db's `*-country-mmdb` packages).
    IpLocationDb,
    /// `{"country": {"iso_code": "NL", ...}}` (MaxMind GeoLite2/GeoIP2 Country and City).
    MaxMind,
}

/// A country database with `(network, ISO code)` entries in `layout`.
///
/// # Errors
/// See [`MmdbWriter::insert`].
pub fn country_db(layout: CountryLayout, entries: &[(&str, &str)]) -> Result<MmdbWriter> {
    let mut w = MmdbWriter::new(match layout {
        CountryLayout::IpLocationDb => "country ipvAll",
        CountryLayout::MaxMind => "GeoLite2-Country",
    });
    for (net, cc) in entries {
        let v = match layout {
            CountryLayout::IpLocationDb => Value::map([("country_code", Value::from(*cc))]),
            CountryLayout::MaxMind => Value::map([(
                "country",
                Value::map([
                    ("geoname_id", Value::U32(2_750_405)),
                    ("iso_code", Value::from(*cc)),
                    ("names", Value::map([("en", Value::from("Somewhere"))])),
                ]),
            )]),
        };
        w.insert(net, v)?;
    }
    Ok(w)
}

/// An ASN database (`autonomous_system_number` / `autonomous_system_organization`, the layout
/// of MaxMind GeoLite2-ASN and ip-location-db's `*-asn-mmdb` files) with `(network, ASN)`
/// entries.
///
/// # Errors
/// See [`MmdbWriter::insert`].
pub fn asn_db(entries: &[(&str, u32)]) -> Result<MmdbWriter> {
    let mut w = MmdbWriter::new("GeoLite2-ASN");
    for (net, asn) in entries {
        w.insert(
            net,
            Value::map([
                ("autonomous_system_number", Value::U32(*asn)),
                (
                    "autonomous_system_organization",
                    Value::String(format!("Test Network {asn}")),
                ),
            ]),
        )?;
    }
    Ok(w)
}

/// The ranges GeoIP tests use: 198.51.100.0/24 → NL/AS64500, 203.0.113.0/24 → JP/AS64501,
/// 2001:db8::/32 → DE/AS64502; everything else is absent.
pub const TEST_RANGES: &[(&str, &str, u32)] = &[
    ("198.51.100.0/24", "NL", 64_500),
    ("203.0.113.0/24", "JP", 64_501),
    ("2001:db8::/32", "DE", 64_502),
];

/// Writes `country.mmdb` (in `layout`) and `asn.mmdb` for [`TEST_RANGES`] into `dir`; returns
/// their paths.
///
/// # Errors
/// I/O errors.
pub fn write_test_databases(
    dir: &Path,
    layout: CountryLayout,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let countries: Vec<(&str, &str)> = TEST_RANGES.iter().map(|(n, c, _)| (*n, *c)).collect();
    let asns: Vec<(&str, u32)> = TEST_RANGES.iter().map(|(n, _, a)| (*n, *a)).collect();
    let country = dir.join("country.mmdb");
    let asn = dir.join("asn.mmdb");
    country_db(layout, &countries)?.write(&country)?;
    asn_db(&asns)?.write(&asn)?;
    Ok((country, asn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_follow_the_spec() -> Result<()> {
        let mut out = Vec::new();
        control(2, 3, &mut out)?;
        assert_eq!(out, [0x43]);
        out.clear();
        control(2, 29 + 10, &mut out)?;
        assert_eq!(out, [0x5d, 10]);
        out.clear();
        control(11, 2, &mut out)?; // array: extended type 4
        assert_eq!(out, [0x02, 0x04]);
        out.clear();
        uint(6, 64_500, &mut out)?;
        assert_eq!(out, [0xc2, 0xfb, 0xf4]);
        Ok(())
    }

    #[test]
    fn overlapping_networks_are_rejected() -> Result<()> {
        let mut w = MmdbWriter::new("t");
        w.insert("198.51.100.0/24", Value::from("a"))?;
        assert!(w.insert("198.51.100.7", Value::from("b")).is_err());
        assert!(w.insert("198.51.0.0/16", Value::from("c")).is_err());
        assert!(w.insert("0.0.0.0/0", Value::from("c")).is_err());
        w.insert("198.51.101.0/24", Value::from("a"))?;
        assert_eq!(w.values.len(), 1, "equal values are stored once");
        Ok(())
    }
}
