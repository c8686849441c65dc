//! `kiln flavor list` and `describe`: every broken plugin file reported,
//! the rest listed; schemas and secret fields shown; nothing constructed.

use std::fs;

use serde_json::{json, Value};

use crate::util::TestProject;

pub(crate) const EVERY_FIXTURE: &[&str] = &[
    "good",
    "describe-panics",
    "load-panics",
    "constructor-aborts",
    "duplicate",
    "no-root-module",
    "newer-protocol",
    "api-0-1",
    "api-1-0",
];

pub(crate) fn problem_for<'a>(problems: &'a [Value], file_part: &str) -> &'a str {
    problems
        .iter()
        .find(|p| p["path"].as_str().is_some_and(|s| s.contains(file_part)))
        .and_then(|p| p["reason"].as_str())
        .unwrap_or_else(|| panic!("no problem reported for {file_part}: {problems:#?}"))
}

pub(crate) fn flavor_names(v: &Value) -> Vec<String> {
    v["flavors"]
        .as_array()
        .expect("flavors")
        .iter()
        .map(|f| {
            format!(
                "{}/{}",
                f["type"].as_str().unwrap_or("?"),
                f["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn flavor_list_reports_every_broken_file_and_lists_the_rest() {
    let p = TestProject::new();
    let dir = p.plugins(EVERY_FIXTURE);
    fs::write(
        dir.join(format!("notes.{}", std::env::consts::DLL_EXTENSION)),
        "just text\n",
    )
    .expect("write");
    fs::write(dir.join("README.txt"), "ignored: not a library name\n").expect("write");
    let run = p.kiln(&[
        "flavor",
        "list",
        "--json",
        "--plugins-dir",
        dir.to_str().expect("utf8"),
    ]);
    run.ok();
    let v = run.json();
    let mut names = flavor_names(&v);
    names.sort();
    assert_eq!(
        names,
        [
            "container-registry/fixture-registry",
            "image-builder/aborts",
            "image-builder/echo",
            "image-builder/newer",
        ]
    );
    let problems = v["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 7, "{problems:#?}");
    assert!(problem_for(problems, "notes.").starts_with("not a loadable dynamic library"));
    assert_eq!(
        problem_for(problems, "no_root_module"),
        "not a kiln plugin: the library exports no abi_stable root module"
    );
    let ours = kiln_plugin_api::PLUGIN_API_VERSION;
    assert_eq!(
        problem_for(problems, "api_1_0"),
        format!(
            "built against plugin-api 1.0.0, which this kiln (plugin-api {ours}) cannot load: \
             use a kiln that speaks plugin-api 1.x, or a build of the plugin for plugin-api 0.2.x"
        )
    );
    assert_eq!(
        problem_for(problems, "api_0_1"),
        format!(
            "built against plugin-api 0.1.0, which this kiln (plugin-api {ours}) cannot load: \
             rebuild the plugin against plugin-api 0.2.x"
        )
    );
    assert_eq!(
        problem_for(problems, "describe_panics"),
        "panicked while describing itself: plugin panicked in describe: schema generation exploded"
    );
    assert_eq!(
        problem_for(problems, "load_panics"),
        "panicked while loading its root module"
    );
    // Files are loaded in name order, so libfixture_duplicate wins over libfixture_good.
    let dup = problem_for(problems, "fixture_good");
    assert!(
        dup.contains("image-builder flavor \"echo\" is already offered by")
            && dup.contains("libfixture_duplicate"),
        "{dup}"
    );
    // The describe-stage panic is reported once, through the error, without a backtrace.
    assert!(!run.stderr.contains("stack backtrace"), "{}", run.stderr);
}

#[test]
fn flavor_list_table_and_strict_mode() {
    let p = TestProject::new();
    let dir = p.plugins(&["good", "no-root-module"]);
    let d = dir.to_str().expect("utf8");
    let run = p.kiln(&["flavor", "list", "--plugins-dir", d]);
    run.ok();
    assert_eq!(
        run.stdout,
        "TYPE                FLAVOR            PLUGIN        DESCRIPTION\n\
         image-builder       echo              fixture-good  Logs the request instead of building\n\
         container-registry  fixture-registry  fixture-good  A registry that knows no images\n"
    );
    assert!(
        run.stderr
            .contains("warning: 1 plugin file(s) could not be used"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("libfixture_no_root_module"),
        "{}",
        run.stderr
    );
    let strict = p.kiln(&["flavor", "list", "--strict", "--plugins-dir", d]);
    strict.code(3);
    assert!(
        strict.stderr.contains("1 plugin problem(s) found"),
        "{}",
        strict.stderr
    );
    let only = p.kiln(&[
        "flavor",
        "list",
        "--json",
        "--type",
        "container-registry",
        "--plugins-dir",
        d,
    ]);
    assert_eq!(
        flavor_names(&only.json()),
        ["container-registry/fixture-registry"]
    );
}

/// `kiln flavor validate`: the schema's verdict without registering, as
/// text or JSON; exit 0 valid, 2 not, and 2 for a config that is not an
/// object. No project is needed.
#[test]
fn flavor_validate_checks_a_config_without_registering() {
    let p = TestProject::new();
    let dir = p.plugins(&["good"]);
    let d = dir.to_str().expect("utf8");
    let validate = |config: &str, json: bool| {
        let mut args = vec![
            "--plugins-dir",
            d,
            "flavor",
            "validate",
            "fixture-registry",
            "--config",
            config,
        ];
        if json {
            args.push("--json");
        }
        p.kiln(&args)
    };
    let ok = validate(r#"{"uri": "127.0.0.1:5000/team"}"#, true);
    ok.code(0);
    assert_eq!(
        ok.json(),
        json!({"flavor": "fixture-registry", "type": "container-registry", "valid": true, "problems": []})
    );
    let bad = validate(r#"{"uri": 5, "colour": "red"}"#, true);
    bad.code(2);
    let v = bad.json();
    assert_eq!(v["valid"], false);
    let problems = v["problems"].to_string();
    assert!(
        problems.contains("/uri") && problems.contains("colour"),
        "{v}"
    );
    let text = validate("{}", false);
    text.code(2);
    assert!(
        text.stderr
            .contains("invalid config for flavor container-registry/fixture-registry")
            && text.stderr.contains("uri"),
        "{}",
        text.stderr
    );
    let r = validate("[1]", false);
    r.code(2);
    assert!(
        r.stderr.contains("--config must be a JSON object"),
        "{}",
        r.stderr
    );
    assert!(!p.root().join("work/.kiln").exists(), "nothing registered");

    // Limits are 64-bit, as the Engine API takes them; one out of range
    // is refused up front, naming the field.
    let shipped = p.root().join("shipped");
    fs::create_dir_all(&shipped).expect("mkdir");
    let docker = crate::util::shipped_plugin("kiln-docker");
    fs::copy(&docker, shipped.join(docker.file_name().expect("name"))).expect("copy");
    let limit = |memory: &str| {
        p.kiln(&[
            "--plugins-dir",
            shipped.to_str().expect("utf8"),
            "flavor",
            "validate",
            "local",
            "--config",
            &format!(r#"{{"docker_build_options": {{"memory": {memory}}}}}"#),
        ])
    };
    limit("2147483647").code(0);
    limit("8589934592").code(0);
    for bad in ["-5", "9223372036854775808"] {
        let r = limit(bad);
        r.code(2);
        assert!(
            r.stderr.contains("/docker_build_options/memory"),
            "{bad}: {}",
            r.stderr
        );
    }
}

#[test]
fn flavor_describe_shows_schema_and_secret_fields() {
    let p = TestProject::new();
    let dir = p.plugins(&["good"]);
    let d = dir.to_str().expect("utf8");
    let v = p
        .kiln(&[
            "flavor",
            "describe",
            "fixture-registry",
            "--json",
            "--plugins-dir",
            d,
        ])
        .json();
    assert_eq!(v["type"], "container-registry");
    assert_eq!(v["capabilities"], json!(["checks-existence"]));
    assert_eq!(v["secret_fields"], json!(["/password"]));
    assert_eq!(
        v["config_schema"]["properties"]["password"]["writeOnly"],
        json!(true)
    );
    assert_eq!(v["config_schema"]["required"], json!(["uri"]));
    let text = p.kiln(&["flavor", "describe", "echo", "--plugins-dir", d]);
    text.ok();
    assert!(
        text.stdout
            .starts_with("flavor:       echo\ntype:         image-builder\n"),
        "{}",
        text.stdout
    );
    assert!(text
        .stdout
        .contains("docs:         https://example.invalid/docs/echo"));
    assert!(text.stdout.contains("secrets:      /token"));
    assert!(text.stdout.contains("config schema:\n{"));
}

#[test]
fn describing_an_unknown_flavor_says_what_exists() {
    let p = TestProject::new();
    let d = p.plugins(&["good"]);
    let run = p.kiln(&[
        "flavor",
        "describe",
        "nope",
        "--plugins-dir",
        d.to_str().expect("utf8"),
    ]);
    run.code(2);
    assert!(
        run.stderr
            .contains("no image-builder or container-registry flavor named \"nope\""),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("available: image-builder/echo, container-registry/fixture-registry"),
        "{}",
        run.stderr
    );
    let run = p.kiln(&[
        "flavor",
        "describe",
        "echo",
        "--type",
        "container-registry",
        "--plugins-dir",
        d.to_str().expect("utf8"),
    ]);
    run.code(2);
    assert!(
        run.stderr.contains("\"echo\" is a image-builder flavor"),
        "{}",
        run.stderr
    );
}

// ------------------------------------------------- nothing is constructed early

#[test]
fn describe_and_register_never_construct() {
    // The `aborts` builder aborts the process in its constructor: if any of
    // these commands constructed it, kiln would die with SIGABRT.
    let p = TestProject::initialised();
    let d = p.plugins(&["constructor-aborts"]);
    let d = d.to_str().expect("utf8");
    p.kiln(&["flavor", "list", "--plugins-dir", d]).ok();
    p.kiln(&["flavor", "describe", "aborts", "--plugins-dir", d])
        .ok();
    p.kiln(&[
        "plugin",
        "check",
        &format!("{d}/libfixture_constructor_aborts.so"),
    ])
    .ok();
    p.kiln(&[
        "component",
        "register",
        "ab",
        "--type",
        "image-builder",
        "--flavor",
        "aborts",
        "--set",
        "host=x",
        "--plugins-dir",
        d,
    ])
    .ok();
    p.kiln(&[
        "component",
        "update",
        "ab",
        "--set",
        "api_key=${env:K}",
        "--plugins-dir",
        d,
    ])
    .ok();
    p.kiln(&["component", "describe", "ab"]).ok();
}

/// A listing takes each plugin's descriptors from the cache when the file
/// is unchanged (no library opened), and sees a plugin touched, replaced
/// in place, deleted or added on the very next run.
#[test]
fn listings_come_from_the_descriptor_cache_and_are_never_stale() {
    use crate::util::shipped_plugin;
    let p = TestProject::new();
    let dir = p.root().join("listed");
    fs::create_dir_all(&dir).expect("mkdir");
    let lib = |name: &str| format!("lib{name}.{}", std::env::consts::DLL_EXTENSION);
    let plugin = dir.join(lib("mine"));
    fs::copy(shipped_plugin("kiln-docker"), &plugin).expect("copy");
    let list = || {
        let r = p.kiln_env(
            &[
                "flavor",
                "list",
                "--json",
                "--plugins-dir",
                dir.to_str().expect("utf8"),
            ],
            // No wait for the file's timestamps to age in a test.
            &[("KILN_PLUGIN_CACHE_RACY_MS", "0"), ("KILN_LOG", "debug")],
        );
        r.ok();
        let opened = r.stderr.matches("opening the plugin library").count();
        let cached = r
            .stderr
            .matches("described from the descriptor cache")
            .count();
        (flavor_names(&r.json()), opened, cached)
    };
    let (echo, opened, cached) = list();
    assert_eq!((opened, cached), (1, 0));
    assert!(!echo.is_empty());
    // Unchanged: nothing opened, the same listing.
    assert_eq!(list(), (echo.clone(), 0, 1));
    // Touched: opened again (then cached again).
    let f = fs::File::options()
        .append(true)
        .open(&plugin)
        .expect("open");
    f.set_modified(std::time::SystemTime::now()).expect("touch");
    drop(f);
    assert_eq!(list(), (echo.clone(), 1, 0));
    assert_eq!(list(), (echo.clone(), 0, 1));
    // Replaced in place by another plugin: its flavors, at once.
    fs::copy(shipped_plugin("kiln-registry"), &plugin).expect("replace");
    let (registry, opened, _) = list();
    assert_eq!(opened, 1);
    assert_ne!(registry, echo);
    assert!(
        registry.iter().any(|n| n == "container-registry/default"),
        "{registry:?}"
    );
    // Added beside it, then the first deleted.
    fs::copy(shipped_plugin("kiln-docker"), dir.join(lib("added"))).expect("add");
    let (both, _, _) = list();
    assert_eq!(both.len(), registry.len() + echo.len(), "{both:?}");
    fs::remove_file(&plugin).expect("delete");
    assert_eq!(list().0, echo);
    // `plugin check` always opens the library, whatever the cache holds.
    let r = p.kiln_env(
        &[
            "plugin",
            "check",
            dir.join(lib("added")).to_str().expect("utf8"),
        ],
        &[("KILN_PLUGIN_CACHE_RACY_MS", "0"), ("KILN_LOG", "debug")],
    );
    r.ok();
    assert!(
        !r.stderr.contains("described from the descriptor cache"),
        "{}",
        r.stderr
    );
}
