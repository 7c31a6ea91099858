//! Connection bookkeeping: what each open connection is doing, the timeouts that close it,
//! and which one to shed when the cap is reached.
//!
//! A connection is *busy* from a request's complete header until its response body ended (or
//! was dropped), otherwise *idle*: fresh (no request yet), keep-alive (after a response), or
//! part-way through a request header / TLS handshake. The sweeper closes
//! - a fresh connection, or one that started sending a request, whose header is not complete
//!   `header_read_timeout` after its first byte (fresh: after accept);
//! - a keep-alive connection idle for `idle_timeout`;
//! - a busy connection with no I/O progress for `stall_timeout` (a client that stopped
//!   reading its response).
//!
//! When the cap is reached the oldest idle connection is shed first.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Timeouts, in the units the sweeper compares (milliseconds since the tracker's epoch).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Longest time from a request's first byte (or accept) to its complete header.
    pub header_read: Duration,
    /// Longest keep-alive idle time between requests.
    pub idle: Duration,
    /// Longest time a busy connection may go without I/O progress.
    pub stall: Duration,
}

/// One open connection.
#[derive(Debug, Default)]
pub struct Conn {
    in_flight: AtomicU32,
    /// Start of the current idle phase (accept or end of the last response), ms.
    idle_since: AtomicU64,
    /// First byte read in the current idle phase, ms; 0 = none yet.
    first_byte: AtomicU64,
    /// Last read or write that moved bytes, ms.
    last_io: AtomicU64,
    /// No request has completed on this connection yet.
    served: AtomicBool,
    /// Set once the connection was told to close.
    closing: AtomicBool,
    /// Wakes the connection's task to close it.
    pub close: Notify,
}

impl Conn {
    /// No request in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// Counts of open connections by state, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Open connections.
    pub open: usize,
    /// Of which busy.
    pub busy: usize,
}

/// All open connections (shared by every listener), oldest first.
#[derive(Debug)]
pub struct Tracker {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// Open connections already told to close.
    closing: AtomicUsize,
    next_id: AtomicU64,
    epoch: Instant,
    /// Notified (all waiters) whenever a connection closes.
    pub closed: Notify,
    /// Notified (one permit) whenever a connection opens: the sweeper sleeps while none is
    /// open (an idle daemon wakes for nothing).
    pub opened: Notify,
    /// Most connections kept open.
    pub cap: usize,
    timeouts: Timeouts,
}

impl Tracker {
    /// A tracker for at most `cap` connections.
    pub fn new(cap: usize, timeouts: Timeouts) -> Arc<Self> {
        Arc::new(Self {
            conns: Mutex::new(BTreeMap::new()),
            closing: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            closed: Notify::new(),
            opened: Notify::new(),
            cap: cap.max(1),
            timeouts,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        match self.conns.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open connections not yet told to close.
    pub fn open_not_closing(&self) -> usize {
        let m = self.map();
        m.len().saturating_sub(self.closing.load(Ordering::Acquire))
    }

    /// Tells `c` to close (once).
    fn close(&self, c: &Conn) {
        if !c.closing.swap(true, Ordering::AcqRel) {
            self.closing.fetch_add(1, Ordering::AcqRel);
            c.close.notify_one();
        }
    }

    /// Open and busy connections.
    pub fn counts(&self) -> Counts {
        let m = self.map();
        Counts {
            open: m.len(),
            busy: m.values().filter(|c| !c.is_idle()).count(),
        }
    }

    /// Registers a just-accepted connection; it is removed when the guard drops.
    pub fn register(self: &Arc<Self>) -> ConnGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let conn = Arc::new(Conn::default());
        conn.idle_since.store(now, Ordering::Relaxed);
        conn.last_io.store(now, Ordering::Relaxed);
        self.map().insert(id, conn.clone());
        self.opened.notify_one();
        ConnGuard {
            id,
            conn,
            tracker: self.clone(),
        }
    }

    /// Tells the oldest idle connection other than `except` to close. False if none is idle.
    ///
    /// Connections that never completed a request (new, or part-way through a header or TLS
    /// handshake: what a flood consists of) go first; then kept-alive ones between requests.
    /// So Prometheus' connection, reused scrape after scrape, is the last idle one to go and
    /// its scrapes never queue behind a flood in the listen backlog.
    pub fn shed_oldest_idle(&self, except: Option<u64>) -> bool {
        let m = self.map();
        let candidate = |id: &u64, c: &Conn| {
            Some(*id) != except && c.is_idle() && !c.closing.load(Ordering::Acquire)
        };
        let victim = m
            .iter()
            .find(|(id, c)| candidate(id, c) && !c.served.load(Ordering::Acquire))
            .or_else(|| m.iter().find(|(id, c)| candidate(id, c)));
        match victim {
            Some((_, c)) => {
                self.close(c);
                true
            }
            None => false,
        }
    }

    /// Closes connections past their timeouts; returns how many were told to close.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let t = self.timeouts;
        let mut n = 0;
        let m = self.map();
        for c in m.values() {
            if c.closing.load(Ordering::Acquire) {
                continue;
            }
            let expired = if !c.is_idle() {
                now.saturating_sub(c.last_io.load(Ordering::Acquire)) > ms(t.stall)
            } else {
                let first = c.first_byte.load(Ordering::Acquire);
                let since = c.idle_since.load(Ordering::Acquire);
                if first != 0 {
                    now.saturating_sub(first) > ms(t.header_read)
                } else if !c.served.load(Ordering::Acquire) {
                    now.saturating_sub(since) > ms(t.header_read)
                } else {
                    now.saturating_sub(since) > ms(t.idle)
                }
            };
            if expired {
                self.close(c);
                n += 1;
            }
        }
        n
    }

    /// Waits until fewer than `n` connections are open.
    pub async fn wait_below(&self, n: usize) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.len() < n {
                return;
            }
            notified.await;
        }
    }
}

/// A registered connection; dropping it unregisters the connection.
#[derive(Debug)]
pub struct ConnGuard {
    /// Registration id (increasing with age).
    pub id: u64,
    /// The shared state.
    pub conn: Arc<Conn>,
    tracker: Arc<Tracker>,
}

impl ConnGuard {
    /// Marks a request as started; the returned guard marks it finished when dropped.
    pub fn begin_request(&self) -> RequestGuard {
        self.conn.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            conn: self.conn.clone(),
            tracker: self.tracker.clone(),
        }
    }

    /// Wraps `io` so reads and writes record progress on this connection.
    pub fn track<S>(&self, io: S) -> TrackedIo<S> {
        TrackedIo {
            inner: io,
            conn: self.conn.clone(),
            tracker: self.tracker.clone(),
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut m = self.tracker.map();
        if m.remove(&self.id).is_some() && self.conn.closing.load(Ordering::Acquire) {
            self.tracker.closing.fetch_sub(1, Ordering::AcqRel);
        }
        drop(m);
        self.tracker.closed.notify_waiters();
    }
}

/// An in-flight request; dropping it (end of the response body) makes the connection idle.
#[derive(Debug)]
pub struct RequestGuard {
    conn: Arc<Conn>,
    tracker: Arc<Tracker>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let now = self.tracker.now_ms();
        self.conn.first_byte.store(0, Ordering::Release);
        self.conn.idle_since.store(now, Ordering::Release);
        self.conn.served.store(true, Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// I/O that records progress on its connection.
#[derive(Debug)]
pub struct TrackedIo<S> {
    inner: S,
    conn: Arc<Conn>,
    tracker: Arc<Tracker>,
}

impl<S> TrackedIo<S> {
    fn progressed(&self, read: bool) {
        let now = self.tracker.now_ms();
        self.conn.last_io.store(now, Ordering::Release);
        if read && self.conn.is_idle() && self.conn.first_byte.load(Ordering::Acquire) == 0 {
            self.conn.first_byte.store(now, Ordering::Release);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.progressed(true);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progressed(false);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progressed(false);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Arc<Tracker> {
        Tracker::new(
            3,
            Timeouts {
                header_read: Duration::from_secs(10),
                idle: Duration::from_secs(60),
                stall: Duration::from_secs(60),
            },
        )
    }

    #[test]
    fn sheds_the_oldest_idle_connection_first() {
        let t = tracker();
        let a = t.register();
        let b = t.register();
        let c = t.register();
        let _busy = a.begin_request();
        assert!(t.shed_oldest_idle(Some(c.id)));
        assert!(
            b.conn.closing.load(Ordering::Acquire),
            "b is the oldest idle"
        );
        assert!(!a.conn.closing.load(Ordering::Acquire), "a is busy");
        assert!(
            !t.shed_oldest_idle(Some(c.id)),
            "only a (busy) and c (excepted) left"
        );
        assert_eq!(t.counts(), Counts { open: 3, busy: 1 });
        assert_eq!(t.open_not_closing(), 2);
        drop(b);
        assert_eq!((t.len(), t.open_not_closing()), (2, 2));
    }

    #[test]
    fn connections_that_never_served_a_request_are_shed_before_kept_alive_ones() {
        let t = tracker();
        let kept = t.register();
        drop(kept.begin_request());
        let fresh = t.register();
        let newest = t.register();
        assert!(t.shed_oldest_idle(Some(newest.id)));
        assert!(fresh.conn.closing.load(Ordering::Acquire));
        assert!(
            !kept.conn.closing.load(Ordering::Acquire),
            "kept-alive goes last"
        );
        assert!(t.shed_oldest_idle(Some(newest.id)));
        assert!(kept.conn.closing.load(Ordering::Acquire));
    }

    #[test]
    fn request_guard_ends_the_busy_phase() {
        let t = tracker();
        let a = t.register();
        let g = a.begin_request();
        assert!(!a.conn.is_idle());
        drop(g);
        assert!(a.conn.is_idle() && a.conn.served.load(Ordering::Acquire));
    }
}
