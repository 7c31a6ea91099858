//! File events for the tailer: one inotify instance (Linux), read by the tailer's own thread.
//!
//! The tailer sleeps in [`Watch::wait`] until an event that can mean new bytes or files, a
//! stop request ([`Stopper::stop`]) or its timeout. There is no event thread: Envoy writes its
//! log tens of times a second under load, and a thread woken for each write (what `notify`
//! runs) cost more CPU than reading the lines. Events that queue up while the tailer reads
//! or waits out `poll_interval` are fetched in one `read`, and the kernel merges repeated
//! writes to one file into one event until they are read (inotify(7)).
//!
//! Watched: creation, deletion and renames in each pattern's directory (discovery), writes
//! and close-after-write of files in it (new bytes). Not watched: opens, reads, closes without
//! writing and attribute changes, which the tailer's own reads cause (waking on them made an
//! idle tailer poll in a loop, 57 % of a core).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What ended a [`Watch::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// The timeout passed without events.
    Timeout,
    /// Only writes to files in watched directories (no discovery needed).
    Writes,
    /// A name was created, moved or removed, events were lost (queue overflow), a watched
    /// directory went away, or the stopper was used: discovery runs.
    Names,
}

impl Woke {
    /// The union of two wakes (`Names` > `Writes` > `Timeout`).
    #[must_use]
    pub fn or(self, other: Woke) -> Woke {
        match (self, other) {
            (Woke::Names, _) | (_, Woke::Names) => Woke::Names,
            (Woke::Writes, _) | (_, Woke::Writes) => Woke::Writes,
            _ => Woke::Timeout,
        }
    }
}

/// Wakes a [`Watch::wait`] from another thread (shutdown).
#[derive(Debug, Clone)]
pub struct Stopper(Arc<mio::Waker>);

impl Stopper {
    /// Ends the current or next [`Watch::wait`] (as [`Woke::Names`]).
    pub fn stop(&self) {
        let _ = self.0.wake();
    }
}

const INOTIFY: mio::Token = mio::Token(0);
const STOP: mio::Token = mio::Token(1);

/// An inotify instance watching the directories of the tailer's patterns.
#[derive(Debug)]
pub struct Watch {
    inotify: inotify::Inotify,
    poll: mio::Poll,
    events: mio::Events,
    waker: Arc<mio::Waker>,
    /// Every pattern's matches live directly in a watched directory (see [`Watch::covers`]).
    covers: bool,
    buf: Vec<u8>,
}

impl Watch {
    /// Watches the directory part of each pattern (up to its first glob character). `None`
    /// if inotify is unavailable; a directory that cannot be watched is logged and makes
    /// [`Watch::covers`] false.
    pub fn new(patterns: &[String]) -> Option<Watch> {
        let inotify = inotify::Inotify::init()
            .inspect_err(|e| tracing::warn!(error = %e, "inotify unavailable; polling"))
            .ok()?;
        let poll = mio::Poll::new().ok()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), STOP).ok()?);
        {
            use std::os::fd::AsRawFd;
            let fd = inotify.as_raw_fd();
            poll.registry()
                .register(
                    &mut mio::unix::SourceFd(&fd),
                    INOTIFY,
                    mio::Interest::READABLE,
                )
                .ok()?;
        }
        let mask = inotify::WatchMask::CREATE
            | inotify::WatchMask::DELETE
            | inotify::WatchMask::MOVED_FROM
            | inotify::WatchMask::MOVED_TO
            | inotify::WatchMask::MODIFY
            | inotify::WatchMask::CLOSE_WRITE
            | inotify::WatchMask::DELETE_SELF
            | inotify::WatchMask::MOVE_SELF;
        let mut covers = true;
        let watches = inotify.watches();
        for p in patterns {
            let dir = super::glob_base(p);
            covers &= super::dir_and_name(Path::new(p)).is_some_and(|(parent, _)| parent == dir);
            if let Err(e) = watches.clone().add(&dir, mask) {
                covers = false;
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; polling");
            }
        }
        Some(Watch {
            inotify,
            poll,
            events: mio::Events::with_capacity(4),
            waker,
            covers,
            buf: vec![0; 16 * 1024],
        })
    }

    /// Whether events report every change discovery could find: each pattern's directory
    /// part is free of glob characters and watched (a pattern like `/var/log/pods/*/*/0.log`
    /// needs polling: its files live in unwatched subdirectories).
    pub fn covers(&self) -> bool {
        self.covers
    }

    /// A handle that ends a wait from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.waker.clone())
    }

    /// Waits up to `timeout` for events (returning at once if some are queued) and takes every
    /// queued one.
    pub fn wait(&mut self, timeout: Duration) -> Woke {
        let woke = self.take();
        if woke != Woke::Timeout {
            return woke;
        }
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::warn!(error = %e, "waiting for file events failed");
            }
            return Woke::Names;
        }
        let stopped = self.events.iter().any(|e| e.token() == STOP);
        let woke = self.take();
        if stopped {
            Woke::Names
        } else {
            woke
        }
    }

    /// Takes every queued event without waiting.
    pub fn take(&mut self) -> Woke {
        let mut woke = Woke::Timeout;
        loop {
            match self.inotify.read_events(&mut self.buf) {
                Ok(events) => {
                    let mut any = false;
                    for e in events {
                        any = true;
                        woke = woke.or(classify(e.mask));
                    }
                    if !any {
                        return woke;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return woke,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading file events failed");
                    return Woke::Names;
                }
            }
        }
    }
}

/// A write (or close after writing) to an existing file needs no discovery; anything else
/// (names, lost events, a watch removed) does.
fn classify(mask: inotify::EventMask) -> Woke {
    use inotify::EventMask as M;
    if (M::MODIFY | M::CLOSE_WRITE).contains(mask) && !mask.is_empty() {
        Woke::Writes
    } else {
        Woke::Names
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{Read, Write};

    fn watch_of(dir: &Path) -> Watch {
        Watch::new(&[dir.join("access.log").display().to_string()]).unwrap()
    }

    #[test]
    fn the_tailers_own_reads_do_not_wake_it() {
        // Regression: every open/read/close-nowrite of the tailer woke it again (57% of a core
        // while idle).
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "{}\n").unwrap();
        let mut w = watch_of(dir.path());
        assert!(w.covers());
        for _ in 0..50 {
            let mut s = String::new();
            std::fs::File::open(&log)
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
        }
        assert_eq!(w.take(), Woke::Timeout, "reads queue no events");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"{}\n")
            .unwrap();
        assert_eq!(w.wait(Duration::from_secs(30)), Woke::Writes);
        assert_eq!(w.take(), Woke::Timeout, "taken in one go");
    }

    #[test]
    fn names_changing_need_discovery() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "").unwrap();
        let mut w = watch_of(dir.path());
        std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
        assert_eq!(w.wait(Duration::from_secs(30)), Woke::Names, "rename");
        std::fs::write(&log, "").unwrap();
        assert_eq!(w.wait(Duration::from_secs(30)), Woke::Names, "create");
        std::fs::remove_file(dir.path().join("access.log.1")).unwrap();
        assert_eq!(w.wait(Duration::from_secs(30)), Woke::Names, "delete");
    }

    #[test]
    fn a_stopper_ends_a_wait_and_a_quiet_wait_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = watch_of(dir.path());
        assert_eq!(w.wait(Duration::from_millis(1)), Woke::Timeout);
        let s = w.stopper();
        let t = std::thread::spawn(move || s.stop());
        assert_eq!(w.wait(Duration::from_secs(30)), Woke::Names);
        t.join().unwrap();
    }

    #[test]
    fn a_glob_in_a_directory_part_is_not_covered() {
        let dir = tempfile::tempdir().unwrap();
        let w = Watch::new(&[dir.path().join("*/0.log").display().to_string()]).unwrap();
        assert!(!w.covers());
        let w = Watch::new(&[dir.path().join("*.log").display().to_string()]).unwrap();
        assert!(w.covers());
    }
}
