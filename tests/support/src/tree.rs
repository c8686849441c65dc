//! Files for a test to work on.

use std::{fs, path::Path};

/// Write `contents` to `root/rel`, making the folders.
pub fn write(root: &Path, rel: &str, contents: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, contents).expect("write");
}
