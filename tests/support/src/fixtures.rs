//! The fixture plugins (`tests/fixtures`) and the shipped plugins, built
//! once per test process into the shared target dir.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The workspace root (this crate is `tests/support`).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("workspace root")
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/x`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Every fixture plugin, with the plugin-api feature it is built with.
const FIXTURES: &[(&str, Option<&str>)] = &[
    ("good", None),
    ("describe-panics", None),
    ("load-panics", None),
    ("constructor-aborts", None),
    ("duplicate", None),
    ("no-root-module", None),
    ("old-layout", Some("kiln-plugin-api/__fixture_layout_v0")),
    (
        "newer-layout",
        Some("kiln-plugin-api/__fixture_layout_next"),
    ),
    (
        "future-api",
        Some("kiln-plugin-api/__fixture_future_version"),
    ),
];

/// Plugins shipped in `plugins/` that the tests load, built with the fixtures.
const SHIPPED: &[&str] = &["kiln-docker", "kiln-registry", "kiln-oci"];

fn lib_file_name(crate_name: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// `cargo test` does not build the cdylibs the tests load, so the harness
/// does, once per test process, into the same target dir (no second copy of
/// the dependency graph). Builds that need a test-only plugin-api feature run
/// one at a time, and each result is copied out before the next build.
pub(crate) fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile_dir = profile_dir();
        let target_dir = profile_dir.parent().expect("target dir");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let out = target_dir.join("kiln-fixtures");
        fs::create_dir_all(&out).expect("create fixtures dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let workspace = workspace_root();
        let mut groups: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
        for (name, feature) in FIXTURES {
            match groups.iter_mut().find(|(f, _)| f == feature && f.is_none()) {
                Some((_, names)) => names.push(name),
                None => groups.push((*feature, vec![name])),
            }
        }
        for (feature, names) in groups {
            let mut cmd = Command::new(&cargo);
            cmd.current_dir(workspace)
                .args(["build", "--quiet", "--target-dir"])
                .arg(target_dir);
            if release {
                cmd.arg("--release");
            }
            let mut packages: Vec<String> = names.iter().map(|n| format!("fixture-{n}")).collect();
            if feature.is_none() {
                packages.extend(SHIPPED.iter().map(|p| p.to_string()));
            }
            for p in &packages {
                cmd.args(["-p", p]);
            }
            if let Some(f) = feature {
                cmd.args(["--features", f]);
            }
            let status = cmd.status().expect("run cargo build for fixtures");
            assert!(status.success(), "building fixtures {names:?} failed");
            for package in packages {
                let file = lib_file_name(&package);
                fs::copy(profile_dir.join(&file), out.join(&file))
                    .unwrap_or_else(|e| panic!("copying fixture {file}: {e}"));
            }
        }
        out
    })
}

/// The built library of fixture `name` (`good`, `old-layout`, ...).
pub fn fixture(name: &str) -> PathBuf {
    let p = fixtures_dir().join(lib_file_name(&format!("fixture-{name}")));
    assert!(p.is_file(), "fixture {name} not built at {}", p.display());
    p
}

/// The built library of a plugin shipped in `plugins/` (`kiln-docker`).
pub fn shipped_plugin(package: &str) -> PathBuf {
    let p = fixtures_dir().join(lib_file_name(package));
    assert!(p.is_file(), "plugin {package} not built at {}", p.display());
    p
}
