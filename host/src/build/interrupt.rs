//! Ctrl-C during a build or push: the first sets the cancellation flag the
//! plugin polls and gives it time to stop its work; a second, or the end of
//! that grace period, exits with 130 at once. The one place besides `main`
//! that ends the process.

use std::{sync::Once, time::Duration};

use crate::{error::exit, output, plugins::CancelFlag};

/// How long a cancelled builder gets to stop (in its daemon, for `local`).
const GRACE: Duration = Duration::from_secs(15);

/// Route Ctrl-C to `flag` for the rest of the process.
pub fn install(flag: &CancelFlag) {
    static ONCE: Once = Once::new();
    let flag = flag.clone();
    ONCE.call_once(move || {
        let _ = ctrlc::set_handler(move || {
            if flag.is_set() {
                // A second Ctrl-C: stop now.
                quit();
            }
            output::status("interrupted: stopping the build (Ctrl-C again to quit at once)");
            flag.cancel();
            std::thread::spawn(|| {
                std::thread::sleep(GRACE);
                quit();
            });
        });
    });
}

/// The worker process Ctrl-C is forwarded to (0: none).
static WORKER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether Ctrl-C was forwarded to a worker.
static SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the user pressed Ctrl-C while a worker ran: a worker that then
/// ended without an answer was interrupted, not crashed.
pub fn interrupted() -> bool {
    SEEN.load(std::sync::atomic::Ordering::SeqCst)
}

/// While a worker runs (`pid`, 0 when it ended), Ctrl-C is forwarded to it
/// as SIGINT, once: it cancels its build and ends; a second Ctrl-C ends it
/// and kiln at once.
pub fn forward_to(pid: u32) {
    use std::sync::atomic::Ordering;
    WORKER.store(pid, Ordering::SeqCst);
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            let pid = WORKER.load(Ordering::SeqCst);
            let second = SEEN.swap(true, Ordering::SeqCst);
            #[cfg(unix)]
            if pid != 0 {
                let signal = if second { libc::SIGKILL } else { libc::SIGINT };
                // SAFETY: kill(2) on a child this process started.
                unsafe {
                    libc::kill(pid as libc::pid_t, signal);
                }
            }
            if second || pid == 0 {
                quit();
            }
        });
    });
}

/// Files and folders this process is writing that must not outlive a Ctrl-C.
static REMOVE: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Remove `path` if Ctrl-C ends kiln (the archive of a context being
/// packed, before any worker runs): a hard exit runs no destructors.
pub fn remove_on_interrupt(path: &std::path::Path) {
    if let Ok(mut list) = REMOVE.lock() {
        list.push(path.to_path_buf());
    }
}

/// A new temporary `.tar` in `TMPDIR` named `<prefix>...`, removed when
/// dropped and, through [`remove_on_interrupt`], when Ctrl-C ends kiln.
pub fn temp_archive(prefix: &str) -> crate::error::Result<tempfile::TempPath> {
    let temp = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".tar")
        .tempfile()
        .map_err(|e| crate::error::Error::io("creating", std::env::temp_dir(), e))?
        .into_temp_path();
    remove_on_interrupt(&temp);
    Ok(temp)
}

/// In a worker: if kiln (the parent) ends without forwarding Ctrl-C (kill
/// -9), act once as if Ctrl-C were pressed, so the build is cancelled and
/// cleaned up instead of running on as an orphan. Polled (a parent-death
/// signal would arrive once per exiting thread of kiln, which reads as a
/// second Ctrl-C: quit without cleaning up).
pub fn cancel_when_orphaned() {
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() };
    let _ = std::thread::Builder::new()
        .name("kiln-parent-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: as above.
            if unsafe { libc::getppid() } != parent {
                // SAFETY: raise(3) delivers SIGINT to this process, once.
                unsafe {
                    libc::raise(libc::SIGINT);
                }
                return;
            }
        });
}

/// From now on, Ctrl-C before a worker starts ends kiln with 130 at once,
/// removing what [`remove_on_interrupt`] named (planning a build: packing
/// its context).
pub fn while_planning() {
    forward_to(0);
}

#[allow(clippy::disallowed_methods)] // the hard exit on Ctrl-C lives here
fn quit() -> ! {
    if let Ok(list) = REMOVE.lock() {
        for path in list.iter() {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    std::process::exit(exit::INTERRUPTED)
}
