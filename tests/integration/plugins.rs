//! Plugin discovery and files: the documented search order, `plugin check`
//! and `plugin install`.

use std::fs;

use crate::flavors::{flavor_names, problem_for};
use crate::util::{fixture, TestProject};

#[test]
fn plugins_are_found_in_the_documented_order() {
    let p = TestProject::initialised();
    // The same flavor in the project folder and in KILN_PLUGINS_DIR: the
    // environment folder comes first, so its copy wins.
    let env_dir = p.root().join("env-plugins");
    fs::create_dir_all(&env_dir).expect("mkdir");
    fs::copy(fixture("duplicate"), env_dir.join("libdup.so")).expect("copy");
    let project_plugins = p.work().join(".kiln/plugins");
    fs::copy(fixture("good"), project_plugins.join("libgood.so")).expect("copy");
    let run = p.kiln_env(
        &["flavor", "list", "--json"],
        &[("KILN_PLUGINS_DIR", env_dir.to_str().expect("utf8"))],
    );
    let v = run.json();
    let echo = v["flavors"]
        .as_array()
        .expect("flavors")
        .iter()
        .find(|f| f["name"] == "echo")
        .expect("echo");
    assert_eq!(echo["plugin"], "fixture-duplicate");
    assert!(
        problem_for(v["problems"].as_array().expect("p"), "libgood").contains("already offered by")
    );
    // --plugins-dir beats the environment.
    let flag_dir = p.plugins(&["good"]);
    let run = p.kiln_env(
        &[
            "flavor",
            "list",
            "--json",
            "--plugins-dir",
            flag_dir.to_str().expect("utf8"),
        ],
        &[("KILN_PLUGINS_DIR", env_dir.to_str().expect("utf8"))],
    );
    let v = run.json();
    let echo = v["flavors"]
        .as_array()
        .expect("f")
        .iter()
        .find(|f| f["name"] == "echo")
        .expect("echo");
    assert_eq!(echo["plugin"], "fixture-good");
    // An explicit folder that does not exist is a problem; default ones are not.
    let run = p.kiln(&[
        "flavor",
        "list",
        "--json",
        "--plugins-dir",
        "/nonexistent/kiln",
    ]);
    let v = run.json();
    assert!(
        problem_for(v["problems"].as_array().expect("p"), "/nonexistent/kiln")
            .contains("cannot read plugins folder")
    );
    let dirs = p.kiln(&["plugin", "dirs", "--json"]).json();
    let origins: Vec<&str> = dirs
        .as_array()
        .expect("dirs")
        .iter()
        .filter_map(|d| d["origin"].as_str())
        .collect();
    assert_eq!(origins, ["project", "user", "installed with kiln"]);
}

#[test]
fn plugin_check_reports_each_file() {
    let p = TestProject::new();
    let good = fixture("good");
    let junk = p.file("libjunk.so", "not a library");
    let run = p.kiln(&["plugin", "check", good.to_str().expect("utf8")]);
    run.ok();
    assert!(run.stdout.starts_with("ok    "), "{}", run.stdout);
    assert!(run
        .stdout
        .contains("image-builder/echo, container-registry/fixture-registry"));
    // Each plugin says its own version and which plugin-api it was built against.
    assert!(
        run.stdout.contains(&format!(
            "(plugin fixture-good 0.1.0, built against plugin-api {})",
            kiln_plugin_api::PLUGIN_API_VERSION
        )),
        "{}",
        run.stdout
    );
    let v = p
        .kiln(&["plugin", "check", "--json", good.to_str().expect("utf8")])
        .ok()
        .json();
    assert_eq!(
        v["flavors"][0]["plugin_api"],
        kiln_plugin_api::PLUGIN_API_VERSION
    );
    assert_eq!(v["flavors"][0]["plugin_version"], "0.1.0");
    assert_eq!(
        v["flavors"][0]["protocol_features"],
        serde_json::json!(kiln_plugin_api::feature::ALL)
    );
    let run = p.kiln(&[
        "plugin",
        "check",
        good.to_str().expect("utf8"),
        junk.to_str().expect("utf8"),
    ]);
    run.code(3);
    assert!(
        run.stdout.contains("bad   ")
            && run
                .stdout
                .contains("libjunk.so: not a loadable dynamic library"),
        "{}",
        run.stdout
    );
    let run = p.kiln(&[
        "plugin",
        "check",
        "--json",
        fixture("api-1-0").to_str().expect("utf8"),
    ]);
    run.code(3);
    assert_eq!(run.json()["problems"].as_array().expect("p").len(), 1);
}

#[test]
fn plugin_install_copies_into_the_user_folder_and_refuses_bad_files() {
    let p = TestProject::new();
    let junk = p.file("libjunk.so", "not a library");
    let run = p.kiln(&[
        "plugin",
        "install",
        fixture("good").to_str().expect("utf8"),
        junk.to_str().expect("utf8"),
    ]);
    run.code(3);
    assert!(
        !p.user_plugins().exists()
            || fs::read_dir(p.user_plugins())
                .expect("dir")
                .next()
                .is_none()
    );
    p.kiln(&["plugin", "install", fixture("good").to_str().expect("utf8")])
        .ok();
    assert!(p.user_plugins().join("libfixture_good.so").is_file());
    // Found without any flag or project.
    let v = p.kiln(&["flavor", "list", "--json"]).json();
    assert_eq!(
        flavor_names(&v),
        ["image-builder/echo", "container-registry/fixture-registry"]
    );
}

/// A kiln installed as `<prefix>/bin/kiln` (a pip-installed kiln's venv)
/// finds the plugins installed with it in `<prefix>/lib/kiln/plugins`, last
/// in the search order, with no flag or variable; with no plugins anywhere,
/// `flavor list` says where it looked and how to add some.
#[test]
fn plugins_installed_with_kiln_are_found_and_an_empty_search_says_where_it_looked() {
    let p = TestProject::new();
    let prefix = p.root().join("venv");
    fs::create_dir_all(prefix.join("bin")).expect("mkdir");
    let plugins = prefix.join("lib/kiln/plugins");
    fs::create_dir_all(&plugins).expect("mkdir");
    let exe = prefix.join("bin/kiln");
    // A link, not a copy: the same binary, found at the prefix.
    fs::hard_link(crate::util::kiln_exe(), &exe)
        .or_else(|_| fs::copy(crate::util::kiln_exe(), &exe).map(|_| ()))
        .expect("install kiln");
    for name in ["kiln-oci", "kiln-registry"] {
        let f = crate::util::shipped_plugin(name);
        fs::copy(&f, plugins.join(f.file_name().expect("name"))).expect("copy plugin");
    }
    let installed = |args: &[&str]| p.kiln_at(&exe, args);
    let v = installed(&["flavor", "list", "--json"]).ok().json();
    let mut names = flavor_names(&v);
    names.sort();
    assert_eq!(
        names,
        ["container-registry/default", "image-builder/oci"],
        "{v}"
    );
    let dirs = installed(&["plugin", "dirs", "--json"]).ok().json();
    let last = dirs
        .as_array()
        .and_then(|d| d.last())
        .cloned()
        .expect("dirs");
    assert_eq!(last["origin"], "installed with kiln");
    assert_eq!(last["path"], plugins.to_string_lossy().as_ref());
    assert_eq!(last["exists"], true);

    // The kiln cargo built has no plugins beside it: an empty search.
    let r = p.kiln(&["flavor", "list"]);
    r.ok();
    assert!(
        r.stderr.contains("no plugins found; kiln looked in:")
            && r.stderr.contains("kiln plugin install"),
        "{}",
        r.stderr
    );
}

/// A file that would take kiln down when opened is reported instead: a
/// truncated copy (which the loader would map and fault on), a library whose
/// constructor ends the process, one whose constructor never returns.
#[test]
fn a_truncated_or_misbehaving_library_is_a_problem_not_a_crash() {
    let p = TestProject::new();
    let dir = p.root().join("bad-plugins");
    fs::create_dir_all(&dir).expect("mkdir");
    let good = fs::read(fixture("good")).expect("read");
    fs::write(dir.join("libcut.so"), &good[..good.len() / 3]).expect("write");
    fs::copy(fixture("good"), dir.join("libgood.so")).expect("copy");
    let dir_s = dir.to_str().expect("utf8");
    let run = p.kiln(&["plugin", "check", &format!("{dir_s}/libcut.so")]);
    run.code(3);
    assert!(run.stdout.contains("truncated"), "{}", run.stdout);
    // The rest of the folder still loads.
    let v = p
        .kiln(&["flavor", "list", "--json", "--plugins-dir", dir_s])
        .ok()
        .json();
    assert!(flavor_names(&v).contains(&"image-builder/echo".to_string()));
    assert!(problem_for(v["problems"].as_array().expect("p"), "libcut").contains("truncated"));

    let bad_dir = p.root().join("misbehaving");
    fs::create_dir_all(&bad_dir).expect("mkdir");
    let bad = bad_dir.join("libfixture_constructor_misbehaves.so");
    fs::copy(fixture("constructor-misbehaves"), &bad).expect("copy");
    let (bad_s, bad_dir_s) = (bad.to_str().expect("utf8"), bad_dir.to_str().expect("utf8"));
    for (how, says) in [
        ("exit", "ended the process"),
        ("hang", "did not finish loading"),
    ] {
        let env = [
            ("FIXTURE_CONSTRUCTOR", how),
            ("KILN_PLUGIN_LOAD_TIMEOUT", "1"),
        ];
        for args in [
            &["plugin", "check", bad_s][..],
            &["flavor", "list", "--strict", "--plugins-dir", bad_dir_s][..],
        ] {
            let run = p.kiln_env(args, &env);
            run.code(3);
            assert!(
                run.stderr.contains(says) && run.stderr.contains("constructor_misbehaves"),
                "{how} {args:?}: {}",
                run.stderr
            );
        }
    }
}

/// A project's `.kiln/plugins` runs code when loaded: it is searched only
/// once trusted (`kiln init` trusts the project it creates; a checkout's is
/// not), never when anyone may write to it or another user owns it.
#[test]
fn project_plugins_load_only_when_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let p = TestProject::new();
    // A checkout that came with a .kiln folder: not made by `kiln init`.
    let plugins = p.work().join(".kiln/plugins");
    fs::create_dir_all(&plugins).expect("mkdir");
    fs::copy(fixture("good"), plugins.join("libgood.so")).expect("copy");
    let listed = |p: &TestProject| {
        let v = p.kiln(&["flavor", "list", "--json"]).ok().json();
        (flavor_names(&v), v)
    };
    let (names, v) = listed(&p);
    assert!(
        !names.contains(&"image-builder/echo".to_string()),
        "{names:?}"
    );
    let why = problem_for(v["problems"].as_array().expect("p"), ".kiln/plugins");
    assert!(
        why.contains("not trusted") && why.contains("kiln plugin trust"),
        "{why}"
    );
    let dirs = p.kiln(&["plugin", "dirs", "--json"]).ok().json();
    assert_eq!(dirs[0]["origin"], "project");
    assert_eq!(dirs[0]["searched"], false);

    assert!(p
        .kiln(&["plugin", "trust"])
        .ok()
        .stdout
        .contains("now trusted"));
    assert!(listed(&p).0.contains(&"image-builder/echo".to_string()));
    p.kiln(&["plugin", "untrust"]).ok();
    assert!(!listed(&p).0.contains(&"image-builder/echo".to_string()));

    // Writable by anyone: never, trusted or not.
    p.kiln(&["plugin", "trust"]).ok();
    fs::set_permissions(&plugins, fs::Permissions::from_mode(0o777)).expect("chmod");
    let (names, v) = listed(&p);
    assert!(!names.contains(&"image-builder/echo".to_string()));
    assert!(
        problem_for(v["problems"].as_array().expect("p"), ".kiln/plugins")
            .contains("written by any user")
    );
    fs::set_permissions(&plugins, fs::Permissions::from_mode(0o755)).expect("chmod");

    // `kiln init` trusts the project it makes.
    let fresh = TestProject::initialised();
    fs::copy(
        fixture("good"),
        fresh.work().join(".kiln/plugins/libgood.so"),
    )
    .expect("copy");
    assert!(listed(&fresh).0.contains(&"image-builder/echo".to_string()));

    // A .kiln owned by another user (only root can make one here).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let kiln_dir = p.work().join(".kiln");
        let status = std::process::Command::new("chown")
            .args(["-R", "65534", kiln_dir.to_str().expect("utf8")])
            .status()
            .expect("chown");
        assert!(status.success());
        let run = p.kiln(&["component", "list"]);
        run.code(2);
        assert!(
            run.stderr.contains("owned by user id 65534"),
            "{}",
            run.stderr
        );
    }
}
