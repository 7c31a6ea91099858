//! `--help`, shell completions and the man page come from one clap definition and say what the
//! commands do (issue 18: `replay --help` claimed it printed the /metrics text; `run --help`
//! left out endpoints and defaults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn out(args: &[&str]) -> String {
    let o = Command::new(Path::new(env!("CARGO_BIN_EXE_vpslens")))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn run_help_lists_every_endpoint_and_the_defaults() {
    let top = out(&["--help"]);
    for endpoint in ["/metrics/istio", "/api/unregistered", "/readyz"] {
        assert!(
            top.contains(endpoint),
            "vpslens --help lacks {endpoint}:\n{top}"
        );
    }
    let run = out(&["run", "--help"]);
    // The defaults in the help text are those of the config struct (its serde defaults).
    let d = serde_json::to_value(vpslens::config::FileConfig::default()).unwrap();
    let text = |k: &str| d[k].as_str().unwrap().to_owned();
    for want in [
        format!("[default: {}]", text("read_from")),
        format!("[default: {}]", text("listen")),
        format!("[default: {}]", text("client_ip")),
        format!("[default: {}]", text("format")),
        "[default: 0]".to_owned(),
        "--discard-corrupt-checkpoint".to_owned(),
        "host names are resolved".to_owned(),
    ] {
        assert!(run.contains(&want), "run --help lacks {want:?}:\n{run}");
    }
    assert!(
        d["trusted_hops"].is_null(),
        "unset trusted_hops is 0 with xff"
    );
}

#[test]
fn replay_help_does_not_claim_to_print_the_metrics_text() {
    let top = out(&["--help"]);
    let line = top
        .lines()
        .find(|l| l.trim_start().starts_with("replay"))
        .unwrap();
    assert!(line.contains("per-node table"), "{line}");
    let replay = out(&["replay", "--help"]);
    assert!(
        replay.contains("only\nwith --metrics-out") || replay.contains("only with --metrics-out"),
        "{replay}"
    );
    assert!(replay.contains("embedded"), "{replay}");
}

#[test]
fn completions_and_man_page_come_from_the_clap_definition() {
    let bash = out(&["completions", "bash"]);
    for flag in [
        "--discard-corrupt-checkpoint",
        "--trusted-hops",
        "--metrics-out",
    ] {
        assert!(bash.contains(flag), "bash completion lacks {flag}");
    }
    let zsh = out(&["completions", "zsh"]);
    assert!(
        zsh.starts_with("#compdef vpslens"),
        "{}",
        &zsh[..zsh.len().min(200)]
    );
    let man = out(&["man"]);
    assert!(
        man.contains(".TH vpslens"),
        "{}",
        &man[..man.len().min(300)]
    );
    for sub in ["run", "replay", "completions"] {
        assert!(man.contains(sub), "man page lacks {sub}");
    }
    let run = out(&["man", "run"]);
    assert!(
        run.contains(".TH vpslens-run"),
        "{}",
        &run[..run.len().min(300)]
    );
    for flag in ["discard\\-corrupt\\-checkpoint", "read\\-from", "listen"] {
        assert!(run.contains(flag), "vpslens-run(1) lacks {flag}");
    }
    let o = Command::new(Path::new(env!("CARGO_BIN_EXE_vpslens")))
        .args(["man", "nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
