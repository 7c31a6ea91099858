//! The README's config reference and `examples/config.yaml` against the code: the defaults in
//! the README table are the serde defaults of `FileConfig` (one source), every key is listed,
//! and the example loads through the real loader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::Value;
use vpslens::config::{FileConfig, Overrides, Settings};
use vpslens::resolve::sources::file_sd::FileSdConfig;

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// `(key, default cell)` rows between the README's `<!-- NAME:start -->` and `:end` markers.
fn readme_rows(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("README.md")).unwrap();
    let start = text
        .find(&format!("<!-- {name}:start -->"))
        .expect("README has the start marker");
    let end = text
        .find(&format!("<!-- {name}:end -->"))
        .expect("README has the end marker");
    let mut rows = Vec::new();
    for line in text[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let key = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_owned();
        rows.push((key, cells[1].trim().to_owned()));
    }
    rows
}

#[test]
fn readme_config_reference_matches_the_serde_defaults() {
    let rows = readme_rows("config-reference");
    assert!(rows.len() >= 20, "README reference parsed: {rows:?}");
    compare(&rows, serde_json::to_value(FileConfig::default()).unwrap());
}

#[test]
fn readme_file_sd_entry_reference_matches_the_serde_defaults() {
    let rows = readme_rows("config-reference-file-sd");
    assert_eq!(rows.len(), 6, "{rows:?}");
    compare(
        &rows,
        serde_json::to_value(FileSdConfig::default()).unwrap(),
    );
}

/// Every row's default equals the serialised default of its key, and every key has a row.
fn compare(rows: &[(String, String)], defaults: Value) {
    let Value::Object(defaults) = defaults else {
        panic!("the config serialises to a map")
    };
    let mut checked = 0;
    for (key, cell) in rows {
        if key == "istio" {
            // Not serialised (the Kiali section describes its defaults).
            continue;
        }
        let code = defaults
            .get(key)
            .unwrap_or_else(|| panic!("README lists `{key}`, which FileConfig does not have"));
        let yaml = cell
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .unwrap_or_else(|| panic!("`{key}`: default cell must be one `YAML` value: {cell}"));
        let readme: Value = serde_norway::from_str(yaml)
            .unwrap_or_else(|e| panic!("`{key}`: README default `{yaml}` is not YAML: {e}"));
        assert_eq!(
            &readme, code,
            "README default of `{key}` differs from the code"
        );
        checked += 1;
    }
    for key in defaults.keys() {
        assert!(
            rows.iter().any(|(k, _)| k == key),
            "FileConfig key `{key}` is missing from the README's config reference"
        );
    }
    assert_eq!(checked, defaults.len());
}

#[test]
fn example_config_loads_through_the_real_loader_and_names_every_key() {
    let path = repo("examples/config.yaml");
    let file = FileConfig::load(&path).unwrap();
    let s = Settings::merge(file, Overrides::default()).unwrap();
    assert!(!s.file.sources.is_empty());
    let text = std::fs::read_to_string(&path).unwrap();
    let Value::Object(defaults) = serde_json::to_value(FileConfig::default()).unwrap() else {
        panic!("map")
    };
    for key in defaults.keys().chain(std::iter::once(&"istio".to_owned())) {
        let listed = text.lines().any(|l| {
            l.trim_start_matches('#')
                .trim_start()
                .starts_with(&format!("{key}:"))
        });
        assert!(listed, "examples/config.yaml does not mention `{key}`");
    }
    // `## ` lines are prose; `# ` lines are commented-out settings: uncommented, they must
    // still load (they document real keys with valid values).
    let uncommented: String = text
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    FileConfig::from_yaml(uncommented.as_bytes()).unwrap();
}
