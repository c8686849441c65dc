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

#[allow(clippy::disallowed_methods)] // the hard exit on Ctrl-C lives here
fn quit() -> ! {
    std::process::exit(exit::INTERRUPTED)
}
