//! A child process that dies with us: the demo's discovery agent, autoscaler, Prometheus and
//! Alertmanager, and every local instance, all started and stopped the same way.
//!
//! Started with `PR_SET_PDEATHSIG` = SIGTERM, so the kernel stops it if we die without cleaning
//! up; stopped with SIGTERM, then SIGKILL once [`GRACE`] has passed; killed if dropped unstopped.

#![allow(
    unsafe_code,
    reason = "libc: PR_SET_PDEATHSIG for children, kill(2) to stop them"
)]

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long a child gets between SIGTERM and SIGKILL: longer than a `poolpilot` child's own
/// drain ([`crate::shutdown::GRACE`], 4 s), so only a hung child meets the kill.
pub const GRACE: Duration = Duration::from_secs(5);

/// A running child; [`Process::stop`] (or dropping it) ends it.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
}

/// Starts `cmd` so that it dies with us. `name` is for logs.
pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> std::io::Result<Process> {
    // SAFETY: prctl is async-signal-safe; the closure touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    Ok(Process {
        name: name.into(),
        child: Some(cmd.spawn()?),
    })
}

impl Process {
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its exit status once it has exited by itself (`None` while it runs).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then waits up to [`GRACE`] and kills. Blocks the calling thread until the child
    /// is reaped: call it from a thread of its own or `spawn_blocking` (or use [`Self::stop_async`]).
    pub fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child, not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    tracing::warn!(process = %self.name, "did not stop within {GRACE:?}; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// [`Self::stop`] on a blocking thread.
    pub async fn stop_async(self) {
        let _ = tokio::task::spawn_blocking(move || self.stop()).await;
    }
}

impl Drop for Process {
    /// An unstopped child is killed (as tokio's `kill_on_drop` would).
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_stops_on_sigterm_and_a_dropped_child_is_killed() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = spawn("sleep", &mut cmd).unwrap();
        let started = Instant::now();
        p.stop();
        assert!(started.elapsed() < GRACE, "SIGTERM ends sleep at once");

        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = spawn("sleep", &mut cmd).unwrap();
        let pid = p.id() as libc::pid_t;
        drop(p);
        // SAFETY: signal 0 only checks that the pid exists; it was reaped by drop.
        let alive = unsafe { libc::kill(pid, 0) };
        assert_eq!(alive, -1, "reaped, so the pid is gone");
    }
}
