//! Start-up checks that turn silent operator mistakes into errors (input that cannot be right)
//! or warnings (input that may be right). Each returns the message it logs so tests can assert
//! it without capturing logs.
//!
//! | case | outcome |
//! | --- | --- |
//! | `listen` cannot be resolved or bound | error naming the address, before any state is touched |
//! | `state_dir` cannot be created/written | error naming the directory |
//! | `checkpoint.json` corrupt | error naming `--discard-corrupt-checkpoint`; with it: moved aside, warning saying what is lost |
//! | `read_from: end`, no checkpoint, existing non-empty files | warning: bytes skipped and how to count them |
//! | `read_from: beginning` with a checkpoint | warning: ignored, files resume from the checkpoint |
//! | a source pattern matching no file | warning (and `vpslens_source_files_followed` stays 0); readiness is not held back |
//! | replay: a pattern matching no file, or only `.gz` | error |
//! | `client_ip: xff` and most lines without a client | warning with the reason |

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::config::split_listen;
use crate::source::{checkpoint, ReadFrom};
use crate::Error;

/// Resolves `listen` (`HOST:PORT`, host names allowed) and binds the first address that
/// binds. Called before the registry, the checkpoint or the state dir are touched.
///
/// # Errors
/// [`Error::Listen`] naming the configured address and the cause.
pub fn bind(listen: &str) -> Result<(TcpListener, SocketAddr), Error> {
    let err = |message: String| Error::Listen {
        addr: listen.to_owned(),
        message,
    };
    let (host, port) = split_listen(listen).map_err(&err)?;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| err(format!("cannot resolve `{host}`: {e}")))?
        .collect();
    let mut last = format!("`{host}` resolves to no address");
    for a in addrs {
        match listen_on(a) {
            Ok(l) => return Ok((l, a)),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(err(last))
}

/// A non-blocking listening socket on `a` with `SO_REUSEADDR` and the server's long backlog
/// ([`crate::export::server::BACKLOG`]: connections past the cap wait in the kernel).
fn listen_on(a: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(a), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&a.into())?;
    socket.listen(i32::try_from(crate::export::server::BACKLOG).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Creates `dir` and proves it writable with a probe file (removed again).
///
/// # Errors
/// [`Error::StateDir`].
pub fn check_state_dir(dir: &Path) -> Result<(), Error> {
    let fail = |source| Error::StateDir {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".vpslens-write-probe");
    std::fs::write(&probe, b"probe").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    Ok(())
}

/// The message for a corrupt checkpoint without `--discard-corrupt-checkpoint`.
pub fn corrupt_checkpoint_hint(e: &checkpoint::CheckpointError) -> String {
    format!(
        "{e}. vpslens refuses to guess (it could re-count or skip lines). To start anyway, run once \
         with --discard-corrupt-checkpoint: the file is moved aside (kept for inspection) and \
         vpslens starts without it — files start at read_from and every vpslens_* counter restarts \
         at 0 (Prometheus sees a counter reset)"
    )
}

/// Moves a corrupt checkpoint aside to `checkpoint.json.corrupt-<unix seconds>` and returns the
/// warning saying what is lost.
///
/// # Errors
/// The rename failed.
pub fn discard_checkpoint(state_dir: &Path) -> Result<String, Error> {
    let from = checkpoint::path_in(state_dir);
    let to = state_dir.join(format!(
        "checkpoint.json.corrupt-{}",
        crate::unix_now_seconds()
    ));
    std::fs::rename(&from, &to)?;
    let msg = format!(
        "--discard-corrupt-checkpoint: moved {} to {}; lost: the file offsets (files start at \
         read_from) and the counters (every vpslens_* counter restarts at 0)",
        from.display(),
        to.display()
    );
    tracing::warn!("{msg}");
    Ok(msg)
}

/// Non-`.gz` files matched by `pattern` (a path or glob), and the `.gz` ones apart.
pub fn matches(pattern: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut plain, mut gz) = (Vec::new(), Vec::new());
    if let Ok(paths) = glob::glob(pattern) {
        for p in paths.flatten().filter(|p| p.is_file()) {
            if p.extension().is_some_and(|e| e == "gz") {
                gz.push(p);
            } else {
                plain.push(p);
            }
        }
    }
    (plain, gz)
}

/// Warnings about where `run` starts reading; logged and returned.
pub fn start_position_warnings(
    sources: &[String],
    read_from: ReadFrom,
    state_dir: Option<&Path>,
) -> Vec<String> {
    let mut out = Vec::new();
    let cp = state_dir.map(checkpoint::path_in).filter(|p| p.exists());
    let mut files = Vec::new();
    for p in sources {
        let (plain, _) = matches(p);
        if plain.is_empty() {
            out.push(format!(
                "source `{p}` matches no file yet: vpslens follows it once it appears (Envoy \
                 creates its access log on the first request); until then nothing is counted and \
                 vpslens_source_files_followed is 0 (/readyz does not wait for it)"
            ));
        }
        files.extend(plain);
    }
    match (&cp, read_from) {
        (Some(cp), ReadFrom::Beginning) => out.push(format!(
            "read_from: beginning (--read-from beginning) is ignored: checkpoint {} exists and \
             files resume from their checkpointed offsets; to count every file from the start \
             again, stop vpslens and move that file away (its counters are lost)",
            cp.display()
        )),
        (None, ReadFrom::End) => {
            let sizes: Vec<u64> = files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok().map(|m| m.len()))
                .collect();
            let bytes: u64 = sizes.iter().sum();
            if bytes > 0 {
                let n = sizes.iter().filter(|s| **s > 0).count();
                out.push(format!(
                    "read_from: end (the default): skipping {bytes} bytes already in {n} \
                     file(s) ({}); only lines written from now on are counted. To count them, \
                     start with --read-from beginning (applies while there is no checkpoint)",
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        _ => {}
    }
    for m in &out {
        tracing::warn!("{m}");
    }
    out
}

/// Replay input check: every pattern must match at least one readable (non-`.gz`) file.
///
/// # Errors
/// [`Error::Usage`] naming the pattern (and the `.gz` files it matched, if any).
pub fn replay_inputs(sources: &[String]) -> Result<(), Error> {
    for p in sources {
        let (plain, gz) = matches(p);
        if !plain.is_empty() {
            continue;
        }
        return Err(Error::Usage(if gz.is_empty() {
            format!("log `{p}` matches no file")
        } else {
            format!(
                "log `{p}` matches only compressed files ({}); vpslens does not read .gz: \
                 decompress first (e.g. `zcat {} > old.log`)",
                gz.iter()
                    .map(|g| g.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                gz[0].display()
            )
        }));
    }
    Ok(())
}

/// The X-Forwarded-For warning: with `client_ip: xff`, more than half of at least 20 parsed
/// lines had no usable client. Returns the message (also logged) when it applies.
pub fn xff_warning(trusted_hops: u8, ok: u64, no_client: u64) -> Option<String> {
    let total = ok + no_client;
    if total < 20 || no_client * 2 <= total {
        return None;
    }
    let msg = format!(
        "client_ip: xff with trusted_hops: {trusted_hops}: {no_client} of {total} lines had no \
         usable client (vpslens_lines_total{{result=\"no_client\"}}): their X-Forwarded-For has \
         fewer than {} entries. Does a proxy in front of the gateway really append one per hop? \
         With an NLB speaking PROXY protocol use client_ip: downstream (the default); otherwise \
         lower trusted_hops",
        u16::from(trusted_hops) + 1
    );
    tracing::warn!("{msg}");
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_from_end_on_a_non_empty_file_says_how_much_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("access.log");
        std::fs::write(&log, b"0123456789\n").unwrap();
        let w =
            start_position_warnings(&[log.display().to_string()], ReadFrom::End, Some(d.path()));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("skipping 11 bytes already in 1 file(s)"),
            "{}",
            w[0]
        );
        assert!(w[0].contains("--read-from beginning"), "{}", w[0]);
        // Beginning without a checkpoint: nothing to say.
        let w = start_position_warnings(
            &[log.display().to_string()],
            ReadFrom::Beginning,
            Some(d.path()),
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn read_from_beginning_with_a_checkpoint_warns_that_it_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("access.log");
        std::fs::write(&log, b"x\n").unwrap();
        std::fs::write(checkpoint::path_in(d.path()), b"{}").unwrap();
        let w = start_position_warnings(
            &[log.display().to_string()],
            ReadFrom::Beginning,
            Some(d.path()),
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("is ignored: checkpoint"), "{}", w[0]);
        // With a checkpoint, `end` skips nothing: no warning.
        let w =
            start_position_warnings(&[log.display().to_string()], ReadFrom::End, Some(d.path()));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn a_missing_log_path_warns() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope.log").display().to_string();
        let w = start_position_warnings(std::slice::from_ref(&p), ReadFrom::End, None);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("matches no file yet"), "{}", w[0]);
    }

    #[test]
    fn replay_on_nothing_or_only_gz_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let e = replay_inputs(&[d.path().join("*.log").display().to_string()]).unwrap_err();
        assert!(e.to_string().contains("matches no file"), "{e}");
        std::fs::write(d.path().join("old.log.gz"), b"x").unwrap();
        let e = replay_inputs(&[d.path().join("old.log*").display().to_string()]).unwrap_err();
        assert!(e.to_string().contains("only compressed files"), "{e}");
        std::fs::write(d.path().join("a.log"), b"x").unwrap();
        replay_inputs(&[d.path().join("*.log").display().to_string()]).unwrap();
    }

    #[test]
    fn unwritable_state_dir_is_an_error_naming_it() {
        let e = check_state_dir(Path::new("/proc/nope")).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("state_dir /proc/nope is not writable"), "{m}");
    }

    #[test]
    fn listen_resolves_host_names_and_names_the_address_in_use() {
        let (l, a) = bind("localhost:0").unwrap();
        assert!(a.ip().is_loopback());
        let port = l.local_addr().unwrap().port();
        let taken = format!("127.0.0.1:{port}");
        let e = bind(&taken).unwrap_err().to_string();
        assert!(e.contains(&format!("cannot listen on {taken}")), "{e}");
        assert!(e.contains("in use"), "{e}");
    }

    #[test]
    fn xff_warning_needs_a_majority_without_client() {
        assert!(xff_warning(1, 100, 10).is_none());
        assert!(xff_warning(1, 1, 5).is_none(), "too few lines to judge");
        let m = xff_warning(1, 1, 222).unwrap();
        assert!(m.contains("222 of 223 lines had no usable client"), "{m}");
    }
}
