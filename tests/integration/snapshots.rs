//! What users read, pinned: `--help` texts and the shipped flavors'
//! descriptors and config schemas. A change shows in review as a diff of
//! `tests/integration/snapshots/`; `KILN_UPDATE_SNAPSHOTS=1 cargo test
//! snapshots` rewrites them after a deliberate change.

use std::{fs, path::PathBuf};

use serde_json::Value;

use crate::util::{shipped_plugin, TestProject};

fn snapshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/integration/snapshots")
        .join(name)
}

/// `actual` must equal the stored snapshot `name`.
fn assert_snapshot(name: &str, actual: &str) {
    let path = snapshot_path(name);
    if std::env::var("KILN_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "snapshot {} is missing ({e}); run KILN_UPDATE_SNAPSHOTS=1 cargo test snapshots",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from {}:\n--- expected\n{expected}\n--- actual\n{actual}\n\
         (KILN_UPDATE_SNAPSHOTS=1 cargo test snapshots rewrites it after a deliberate change)",
        path.display()
    );
}

#[test]
fn help_texts() {
    let p = TestProject::new();
    for (args, name) in [
        (&["--help"][..], "help.txt"),
        (&["build", "--help"], "build-help.txt"),
        (&["push", "--help"], "push-help.txt"),
        (&["flavor", "list", "--help"], "flavor-list-help.txt"),
        (
            &["component", "register", "--help"],
            "component-register-help.txt",
        ),
    ] {
        let r = p.kiln(args);
        r.ok();
        assert_snapshot(name, &r.stdout);
    }
}

#[test]
fn shipped_flavor_schemas() {
    let p = TestProject::new();
    let dir = p.root().join("plugins");
    for package in ["kiln-oci", "kiln-docker", "kiln-registry"] {
        let lib = shipped_plugin(package);
        fs::copy(&lib, dir.join(lib.file_name().expect("name"))).expect("copy plugin");
    }
    let plugins = dir.to_string_lossy().into_owned();
    for (kind, flavor) in [
        ("image-builder", "oci"),
        ("image-builder", "local"),
        ("container-registry", "default"),
    ] {
        let mut v: Value = p
            .kiln(&[
                "--plugins-dir",
                &plugins,
                "flavor",
                "describe",
                flavor,
                "--type",
                kind,
                "--json",
            ])
            .ok()
            .json();
        // Where the library sits differs per checkout.
        v["plugin_path"] = Value::from("<PLUGIN_PATH>");
        let text = serde_json::to_string_pretty(&v).expect("json") + "\n";
        assert_snapshot(&format!("flavor-{kind}-{flavor}.json"), &text);
    }
}

/// Shell completions and man pages come from the same command-line
/// definition as `--help`: every shell gets a script naming the build
/// flags, bash's parses, and `kiln man` writes one page per command
/// (hidden ones and clap's `help` left out), each a roff page.
#[test]
fn completions_and_man_pages_come_from_the_cli() {
    let p = TestProject::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = p.kiln(&["completions", shell]);
        r.ok();
        // fish spells long flags `-l NAME`; the others `--NAME`.
        assert!(r.stdout.contains("metadata-file"), "{shell}: {}", r.stdout);
        assert!(r.stdout.contains("iidfile"), "{shell}");
    }
    let bash = p.kiln(&["completions", "bash"]).stdout.clone();
    let script = p.root().join("kiln.bash");
    std::fs::write(&script, bash).expect("write");
    let parsed = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash");
    assert!(parsed.success(), "bash -n refused the completion script");
    p.kiln(&["completions", "tcsh"]).code(2);

    let dir = p.root().join("man");
    let r = p.kiln(&["man", dir.to_str().expect("utf-8")]);
    r.ok();
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .expect("man dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "kiln.1",
        "kiln-build.1",
        "kiln-image-exists.1",
        "kiln-flavor-validate.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} missing: {pages:?}");
    }
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("help") || p.contains("worker")),
        "{pages:?}"
    );
    let build = std::fs::read_to_string(dir.join("kiln-build.1")).expect("page");
    assert!(
        build.starts_with(".ie") || build.contains(".TH kiln-build"),
        "{build}"
    );
    assert!(build.contains("push"), "{build}");
    assert!(
        r.stdout
            .contains(&format!("wrote {} man pages", pages.len())),
        "{}",
        r.stdout
    );
}
