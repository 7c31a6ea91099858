//! Child-process guards, free loopback ports and bounded polling.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Owns a spawned child process and kills it (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Wraps an already spawned child. `name` is used in error messages.
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            name: name.into(),
            child: Some(child),
        }
    }

    /// Spawns `cmd` (stdin set to null) and wraps it.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> Result<Self> {
        let name = name.into();
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to spawn {name}: {cmd:?}"))?;
        Ok(Self::new(name, child))
    }

    /// Spawns `cmd` with stdout and stderr redirected to the given files.
    pub fn spawn_logged(
        name: impl Into<String>,
        cmd: &mut Command,
        stdout: &Path,
        stderr: &Path,
    ) -> Result<Self> {
        let out = File::create(stdout).with_context(|| format!("create {}", stdout.display()))?;
        let err = File::create(stderr).with_context(|| format!("create {}", stderr.display()))?;
        cmd.stdout(out).stderr(err);
        Self::spawn(name, cmd)
    }

    /// The name given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// OS process id, or `None` once the child has been reaped.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Non-blocking check whether the child has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c
                .try_wait()
                .with_context(|| format!("try_wait on {}", self.name)),
            None => bail!("{} was already reaped", self.name),
        }
    }

    /// Errors if the child has already exited (useful right after startup).
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_wait()? {
            bail!("{} exited early with {status}", self.name);
        }
        Ok(())
    }

    /// Waits up to `timeout` for the child to exit; `Ok(None)` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the child (no-op error if already reaped).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let id = self
            .id()
            .ok_or_else(|| anyhow!("{} was already reaped", self.name))?;
        let pid = Pid::from_raw(i32::try_from(id).context("pid out of range")?);
        kill(pid, sig).with_context(|| format!("kill({id}, {sig}) for {}", self.name))
    }

    /// SIGTERM, then waits up to `timeout` for exit. Errors (after SIGKILL)
    /// if the child did not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        match self.wait_timeout(timeout)? {
            Some(status) => Ok(status),
            None => {
                self.kill()?;
                bail!(
                    "{} did not exit within {timeout:?} after SIGTERM (killed)",
                    self.name
                )
            }
        }
    }

    /// SIGKILL and reap. Returns the exit status.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let name = self.name.clone();
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("{name} was already reaped"))?;
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        // Ignore the error: the process may have exited in between.
        let _ = child.kill();
        child.wait().with_context(|| format!("wait for {name}"))
    }

    /// Mutable access to the underlying [`Child`] (e.g. to take its pipes).
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Returns a currently free TCP port on 127.0.0.1 (bind to port 0, then release).
///
/// There is an inherent race between releasing and reuse; callers that spawn a
/// server on it should retry on bind failure (the Prometheus/Alertmanager
/// helpers do).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Polls `f` every `poll` until it returns true; errors after `timeout`.
pub fn wait_until<F: FnMut() -> bool>(timeout: Duration, poll: Duration, mut f: F) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        thread::sleep(poll);
    }
}

/// Polls `f` every `poll` until it yields `Ok(Some(v))`; errors after
/// `timeout`, including the last error `f` returned (if any) and `what`.
pub fn wait_for_value<T, F>(what: &str, timeout: Duration, poll: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Result<Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last_err = match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        thread::sleep(poll);
    }
}

/// Waits until a TCP connect to `addr` succeeds.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_for_value(
        &format!("TCP port {addr}"),
        timeout,
        Duration::from_millis(50),
        || {
            Ok(
                TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .ok()
                    .map(|_| ()),
            )
        },
    )
}

/// Reads a file to a string, returning an empty string if it does not exist yet.
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Last `n` lines of a (log) file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let s = read_lossy(path);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A server process the testkit starts (Envoy, Prometheus, Alertmanager): spawned with its
/// stdout and stderr in files, waited on until a readiness probe passes while it must stay
/// alive, and killed on drop. Errors carry the tail of its stderr.
#[derive(Debug)]
pub struct ManagedServer {
    child: ChildGuard,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ManagedServer {
    /// Spawns `cmd` with stdout and stderr in `<dir>/<tag>stdout.log` and `<dir>/<tag>stderr.log`.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path, tag: &str) -> Result<Self> {
        let stdout = dir.join(format!("{tag}stdout.log"));
        let stderr = dir.join(format!("{tag}stderr.log"));
        let child = ChildGuard::spawn_logged(name, cmd, &stdout, &stderr)?;
        Ok(Self {
            child,
            stdout,
            stderr,
        })
    }

    /// Spawns the server on a free loopback port and waits until `ready(addr)` holds. If it
    /// does not come up and its stderr says the port was taken (the race between
    /// [`free_port`] and the server's bind), it is started again on another port, at most
    /// three times. `command(addr, attempt)` builds the command line for one attempt.
    pub fn start_on_free_port(
        name: &str,
        dir: &Path,
        timeout: Duration,
        mut command: impl FnMut(SocketAddr, usize) -> Command,
        mut ready: impl FnMut(SocketAddr) -> bool,
    ) -> Result<(Self, SocketAddr)> {
        let mut last_err = None;
        for attempt in 0..3 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
            let mut server = Self::spawn(
                name,
                &mut command(addr, attempt),
                dir,
                &format!("{attempt}-"),
            )?;
            match server.wait_ready(&format!("{name} on {addr}"), timeout, || {
                Ok(ready(addr).then_some(()))
            }) {
                Ok(()) => return Ok((server, addr)),
                Err(e) => {
                    let in_use = server.stderr_tail(30).contains("address already in use");
                    last_err = Some(e);
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("{name} failed to start")))
    }

    /// Polls `probe` every 50 ms until it yields a value; errors if the process exits first
    /// or after `timeout`, with the tail of its stderr.
    pub fn wait_ready<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let child = &mut self.child;
        wait_for_value(what, timeout, Duration::from_millis(50), || {
            child.ensure_running()?;
            probe()
        })
        .with_context(|| {
            format!(
                "{} failed to start\n--- stderr ---\n{}",
                self.child.name(),
                tail(&self.stderr, 30)
            )
        })
    }

    /// The last `n` lines of its stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        tail(&self.stderr, n)
    }

    /// Path of its captured stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// Path of its captured stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// OS process id, or `None` once reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The process guard (signals, waits).
    pub fn child_mut(&mut self) -> &mut ChildGuard {
        &mut self.child
    }
}
