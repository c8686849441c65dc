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

/// Every fixture plugin in `tests/fixtures`.
const FIXTURES: &[&str] = &[
    "good",
    "describe-panics",
    "load-panics",
    "constructor-aborts",
    "duplicate",
    "no-root-module",
    "constructor-misbehaves",
    "newer-protocol",
    "api-0-1",
    "api-1-0",
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

/// Build `packages` (of the workspace at `manifest`, or kiln's) into the
/// running tests' target dir and profile, and copy their libraries into
/// `target/<folder>`, which is returned.
fn build_libraries(folder: &str, manifest: Option<&Path>, packages: &[String]) -> PathBuf {
    let profile_dir = profile_dir();
    let target_dir = profile_dir.parent().expect("target dir");
    let out = target_dir.join(folder);
    fs::create_dir_all(&out).expect("create the fixtures folder");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "--locked", "--target-dir"])
        .arg(target_dir);
    if let Some(manifest) = manifest {
        cmd.arg("--manifest-path").arg(manifest);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().expect("run cargo build for fixtures");
    assert!(status.success(), "building {packages:?} failed");
    for package in packages {
        let file = lib_file_name(package);
        fs::copy(profile_dir.join(&file), out.join(&file))
            .unwrap_or_else(|e| panic!("copying fixture {file}: {e}"));
    }
    out
}

/// `cargo test` does not build the cdylibs the tests load, so the harness
/// does, once per test process, into the same target dir (no second copy of
/// the dependency graph).
pub(crate) fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut packages: Vec<String> = FIXTURES.iter().map(|n| format!("fixture-{n}")).collect();
        packages.extend(SHIPPED.iter().map(|p| p.to_string()));
        build_libraries("kiln-fixtures", None, &packages)
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

/// The compatibility fixture `name` (`first-release`) from `tests/compat`, a
/// workspace of its own holding the frozen first release of the plugin
/// contract; built once per test process into the same target dir, with
/// its own lock file.
pub fn compat_fixture(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let manifest = workspace_root().join("tests/compat/Cargo.toml");
        let packages = ["fixture-first-release".to_owned()];
        build_libraries("kiln-compat-fixtures", Some(&manifest), &packages)
    });
    let p = dir.join(lib_file_name(&format!("fixture-{name}")));
    assert!(
        p.is_file(),
        "compat fixture {name} not built at {}",
        p.display()
    );
    p
}
