//! The plugin contract holds in both directions: a plugin built against the
//! frozen first release (`tests/compat`, plugin-api 0.2.0) and one built
//! against a newer protocol of the same ABI (`fixture-newer-protocol`, with
//! extra fields, an unknown feature, capability, event level and component
//! type) are listed, described, registered, built with (context hook
//! included) and pushed through in the current kiln. Plugins built against
//! another ABI are refused by name in `flavors.rs`.

use std::fs;

use serde_json::Value;

use crate::util::{compat_fixture, fixture, write, TestProject};

/// A project whose plugins folder holds the first-release plugin and the
/// newer-protocol fixture.
fn project() -> (TestProject, std::path::PathBuf) {
    let p = TestProject::initialised();
    let dir = p.root().join("plugins");
    for lib in [compat_fixture("first-release"), fixture("newer-protocol")] {
        fs::copy(&lib, dir.join(lib.file_name().expect("name"))).expect("copy");
    }
    write(&p.work().join("app"), "Dockerfile", "FROM scratch\n");
    (p, dir)
}

fn flavor<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["flavors"]
        .as_array()
        .expect("flavors")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no flavor {name}: {list:#}"))
}

#[test]
fn both_plugins_list_with_their_own_versions_and_protocols() {
    let (p, dir) = project();
    let r = p
        .cmd()
        .plugins(&dir)
        .args(["flavor", "list", "--json"])
        .run();
    r.ok();
    let v = r.json();
    assert!(
        v["problems"].as_array().expect("problems").is_empty(),
        "{v:#}"
    );
    let first = flavor(&v, "first");
    assert_eq!(first["plugin"], "fixture-first-release");
    assert_eq!(first["plugin_version"], "1.0.0");
    assert_eq!(first["plugin_api"], "0.2.0");
    assert_eq!(flavor(&v, "first-registry")["type"], "container-registry");
    let newer = flavor(&v, "newer");
    assert_eq!(newer["plugin_version"], "3.1.0");
    assert_eq!(newer["plugin_api"], "0.2.99");
    assert!(newer["protocol_features"]
        .as_array()
        .expect("features")
        .contains(&Value::from("teleport")));
    // A capability this kiln does not know is kept, as declared.
    assert_eq!(
        newer["capabilities"],
        serde_json::json!(["builds-locally", "customizes-context", "builds-in-space"])
    );
    // A flavor of a component type this kiln does not know is left out.
    assert!(v["flavors"]
        .as_array()
        .expect("flavors")
        .iter()
        .all(|f| f["name"] != "newer-signer"));
    let r = p
        .cmd()
        .plugins(&dir)
        .args(["flavor", "describe", "first"])
        .run();
    r.ok();
    assert!(r.stdout.contains("plugin-api:   0.2.0"), "{}", r.stdout);
    assert!(r.stdout.contains("\"prefix\""), "{}", r.stdout);
}

#[test]
fn a_first_release_plugin_builds_with_its_context_hook_and_pushes() {
    let (p, dir) = project();
    let cmd = || p.cmd().plugins(&dir);
    cmd()
        .register(
            "b",
            "image-builder",
            "first",
            &["prefix=p-", "token=${env:FIRST_TOKEN}"],
        )
        .run()
        .ok();
    cmd()
        .register(
            "r",
            "container-registry",
            "first-registry",
            &["uri=127.0.0.1:5999/team"],
        )
        .run()
        .ok();
    let r = cmd()
        .build("app")
        .tag("127.0.0.1:5999/team/app:1")
        .args(["--builder", "b"])
        .registry("r")
        .json()
        .env("FIRST_TOKEN", "s3cr3t-value")
        .run();
    r.ok();
    assert!(
        r.stderr.contains("p-context") && r.stderr.contains("hook file present, token of 12 bytes"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("first-registry: stored 127.0.0.1:5999/team/app:1"),
        "{}",
        r.stderr
    );
    assert!(!r.all_output().contains("s3cr3t-value"), "secret printed");
    let built = r.json();
    assert_eq!(built["status"], "built", "{built:#}");
    let digest = built["digest"].as_str().expect("digest").to_owned();
    assert!(digest.ends_with(&"0".repeat(48)), "{digest}");

    // A feature it does not speak (secrets came in 0.2.1) is refused by
    // name, not dropped.
    let r = cmd()
        .build("app")
        .tag("127.0.0.1:5999/team/app:2")
        .args(["--builder", "b", "--secret", "id=tok,env=FIRST_TOKEN"])
        .env("FIRST_TOKEN", "s3cr3t-value")
        .run();
    r.code(2);
    assert!(
        r.stderr.contains(
            "--secret: builder b (plugin fixture-first-release 1.0.0, plugin-api 0.2.0) does not take secrets"
        ),
        "{}",
        r.stderr
    );

    // So is a build for several platforms (0.2.2), which it would have
    // built for one.
    let r = cmd()
        .build("app")
        .tag("127.0.0.1:5999/team/app:2")
        .args(["--builder", "b", "--platform", "linux/amd64,linux/arm64"])
        .env("FIRST_TOKEN", "s3cr3t-value")
        .run();
    r.code(2);
    assert!(
        r.stderr.contains(
            "--platform: builder b (plugin fixture-first-release 1.0.0, plugin-api 0.2.0) does \
             not build several platforms in one run"
        ),
        "{}",
        r.stderr
    );
    // And a filesystem output (0.2.4), which it would have taken for an
    // archive path.
    let r = cmd()
        .build("app")
        .tag("127.0.0.1:5999/team/app:2")
        .args(["--builder", "b", "-o", "type=local,dest=rootfs"])
        .env("FIRST_TOKEN", "s3cr3t-value")
        .run();
    r.code(2);
    assert!(
        r.stderr.contains(
            "--output type=local: builder b (plugin fixture-first-release 1.0.0, plugin-api \
             0.2.0) does not write an image's filesystem; update the plugin to one built against \
             plugin-api 0.2.4 or later"
        ),
        "{}",
        r.stderr
    );

    let r = cmd().push("127.0.0.1:5999/team/app:1", "r").json().run();
    r.ok();
    assert!(
        r.stdout.contains(digest.trim_start_matches(|c| c != 's')),
        "{}",
        r.stdout
    );
}

#[test]
fn a_newer_protocol_plugin_builds_through_a_first_release_registry() {
    let (p, dir) = project();
    let cmd = || p.cmd().plugins(&dir);
    cmd()
        .register("newer", "image-builder", "newer", &["note=from-test"])
        .run()
        .ok();
    cmd()
        .register(
            "r",
            "container-registry",
            "first-registry",
            &["uri=127.0.0.1:5999/team"],
        )
        .run()
        .ok();
    // Its context hook adds one file, with fields this kiln ignores.
    let files = |builder: &[&str]| {
        let r = cmd()
            .build("app")
            .tag("127.0.0.1:5999/team/app:1")
            .args(builder)
            .dry_run()
            .json()
            .run();
        r.ok();
        r.json()["context_files"].as_u64().expect("context_files")
    };
    assert_eq!(
        files(&["--builder", "newer"]),
        2,
        "Dockerfile and newer.txt"
    );
    assert_eq!(
        files(&["--builder-flavor", "first"]),
        2,
        "Dockerfile and first.txt"
    );
    let r = cmd()
        .build("app")
        .tag("127.0.0.1:5999/team/app:1")
        .args(["--builder", "newer"])
        .registry("r")
        .json()
        .run();
    r.ok();
    assert!(
        r.stderr
            .contains("newer: building 127.0.0.1:5999/team/app:1 (from-test)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("a level and kind from the future"),
        "{}",
        r.stderr
    );
    // The newer builder pushed through the host to the first-release registry.
    assert!(
        r.stderr
            .contains("first-registry: stored 127.0.0.1:5999/team/app:1"),
        "{}",
        r.stderr
    );
    let built = r.json();
    assert!(
        built["digest"]
            .as_str()
            .expect("digest")
            .ends_with(&"0".repeat(48)),
        "{built:#}"
    );
}
