//! kiln's integration tests: the real `kiln` binary against real plugin
//! libraries (the fixtures under `tests/fixtures/`, built by the harness).

#![allow(clippy::disallowed_methods)] // Tests read CI, CARGO and PATH where they need them.

mod build;
mod build_plan;
mod context;
mod docker_cli;
mod oci;
mod registry;
mod util;

use std::fs;

use serde_json::{json, Value};
use util::{fixture, TestProject};

const EVERY_FIXTURE: &[&str] = &[
    "good",
    "describe-panics",
    "load-panics",
    "constructor-aborts",
    "duplicate",
    "no-root-module",
    "old-layout",
    "newer-layout",
    "future-api",
];

fn problem_for<'a>(problems: &'a [Value], file_part: &str) -> &'a str {
    problems
        .iter()
        .find(|p| p["path"].as_str().is_some_and(|s| s.contains(file_part)))
        .and_then(|p| p["reason"].as_str())
        .unwrap_or_else(|| panic!("no problem reported for {file_part}: {problems:#?}"))
}

fn flavor_names(v: &Value) -> Vec<String> {
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

// ---------------------------------------------------------------- flavor list

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
    let future = problem_for(problems, "future_api");
    assert!(
        future.contains("incompatible plugin-api")
            && future.contains("9.0.0")
            && future.contains("0.1.0"),
        "{future}"
    );
    let old = problem_for(problems, "old_layout");
    assert!(
        old.starts_with("built against an older plugin-api layout") && old.contains("rebuild"),
        "{old}"
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
    assert_eq!(origins, ["project", "user"]);
}

// ------------------------------------------------------------ flavor describe

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

// --------------------------------------------------------------------- plugins

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
        fixture("future-api").to_str().expect("utf8"),
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

// ------------------------------------------------------------------- projects

#[test]
fn commands_find_the_project_by_walking_up() {
    let p = TestProject::new();
    let run = p.kiln(&["component", "list"]);
    run.code(2);
    assert!(
        run.stderr.contains("no kiln project found in"),
        "{}",
        run.stderr
    );
    p.kiln(&["init"]).ok();
    assert!(p
        .kiln(&["init"])
        .stdout
        .contains("is already a kiln project"));
    let d = p.plugins(&["good"]);
    fs::create_dir_all(p.work().join("src/deep")).expect("mkdir");
    let mut cmd = p.command(&[
        "component",
        "register",
        "b",
        "--type",
        "image-builder",
        "--flavor",
        "echo",
        "--plugins-dir",
    ]);
    cmd.arg(&d).current_dir(p.work().join("src/deep"));
    assert!(cmd.status().expect("run").success());
    assert!(fs::read_to_string(p.work().join(".kiln/components.json"))
        .expect("state")
        .contains("\"b\""));
    // --project from elsewhere.
    let run = p.kiln(&[
        "component",
        "list",
        "--json",
        "--project",
        p.work().to_str().expect("utf8"),
    ]);
    let mut cmd = p.command(&["component", "list", "--json", "--project"]);
    cmd.arg(p.work()).current_dir(p.root());
    let out = cmd.output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), run.stdout);
    assert!(run.stdout.contains("\"name\": \"b\""));
}

// ----------------------------------------------------------------- components

fn registry_project() -> (TestProject, String) {
    let p = TestProject::initialised();
    let d = p.plugins(&["good"]).to_str().expect("utf8").to_owned();
    (p, d)
}

#[test]
fn register_validates_against_the_schema() {
    let (p, d) = registry_project();
    let reg = |args: &[&str]| {
        let mut all = vec![
            "component",
            "register",
            "reg",
            "--type",
            "container-registry",
            "--flavor",
            "fixture-registry",
            "--plugins-dir",
            &d,
        ];
        all.extend_from_slice(args);
        p.kiln(&all)
    };
    let run = reg(&["--set", "uri=localhost:5000/"]);
    run.code(2);
    assert!(
        run.stderr.contains("invalid config for component \"reg\" (flavor container-registry/fixture-registry):\n  /uri: \"localhost:5000/\" does not match"),
        "{}",
        run.stderr
    );
    let run = reg(&["--set", "uri=localhost:5000", "--set", "usrname=me"]);
    run.code(2);
    assert!(
        run.stderr
            .contains("/usrname: unknown key (known keys: uri, username, password)"),
        "{}",
        run.stderr
    );
    let run = reg(&[]);
    run.code(2);
    assert!(
        run.stderr
            .contains("(root): \"uri\" is a required property"),
        "{}",
        run.stderr
    );
    let run = reg(&["--set", "uri=localhost:5000", "--set", "username=5"]);
    run.code(2);
    assert!(
        run.stderr
            .contains("/username: 5 is not of types \"null\", \"string\""),
        "{}",
        run.stderr
    );
    assert!(
        !p.work().join(".kiln/components.json").exists(),
        "nothing stored after failures"
    );
    reg(&["--set", "uri=localhost:5000/team", "--set", "username=me"]).ok();
    let run = reg(&["--set", "uri=localhost:5000"]);
    run.code(2);
    assert!(
        run.stderr
            .contains("a component named \"reg\" exists already"),
        "{}",
        run.stderr
    );
    let v = p.kiln(&["component", "describe", "reg", "--json"]).json();
    assert_eq!(
        v,
        json!({"name": "reg", "type": "container-registry", "flavor": "fixture-registry", "config": {"uri": "localhost:5000/team", "username": "me"}})
    );
    // Wrong type for the flavor, and an unknown flavor.
    let run = p.kiln(&[
        "component",
        "register",
        "x",
        "--type",
        "image-builder",
        "--flavor",
        "fixture-registry",
        "--plugins-dir",
        &d,
    ]);
    run.code(2);
    assert!(
        run.stderr
            .contains("\"fixture-registry\" is a container-registry flavor"),
        "{}",
        run.stderr
    );
}

#[test]
fn register_from_a_config_file_or_stdin() {
    let (p, d) = registry_project();
    p.file(
        "reg.json",
        r#"{"uri": "reg.example.com", "username": "ci"}"#,
    );
    p.kiln(&[
        "component",
        "register",
        "a",
        "--type",
        "container-registry",
        "--flavor",
        "fixture-registry",
        "--config",
        "reg.json",
        "--set",
        "username=bot",
        "--plugins-dir",
        &d,
    ])
    .ok();
    let v = p.kiln(&["component", "describe", "a", "--json"]).json();
    assert_eq!(
        v["config"],
        json!({"uri": "reg.example.com", "username": "bot"})
    );
    p.kiln_stdin(
        &[
            "component",
            "register",
            "b",
            "--type",
            "container-registry",
            "--flavor",
            "fixture-registry",
            "--config",
            "-",
            "--plugins-dir",
            &d,
        ],
        r#"{"uri": "127.0.0.1:5000"}"#,
    )
    .ok();
    let run = p.kiln_stdin(
        &[
            "component",
            "register",
            "c",
            "--type",
            "container-registry",
            "--flavor",
            "fixture-registry",
            "--config",
            "-",
            "--plugins-dir",
            &d,
        ],
        "{\"uri\": ",
    );
    run.code(2);
    assert!(
        run.stderr.contains("--config -: not valid JSON at line 1"),
        "{}",
        run.stderr
    );
}

#[test]
fn secrets_are_masked_and_kept_out_of_the_state_file() {
    let (p, d) = registry_project();
    let secret = "hunter2-s3cret-value";
    let run = p.kiln(&[
        "component",
        "register",
        "reg",
        "--type",
        "container-registry",
        "--flavor",
        "fixture-registry",
        "--set",
        "uri=127.0.0.1:5000",
        "--set",
        &format!("password={secret}"),
        "--plugins-dir",
        &d,
    ]);
    run.ok();
    assert!(run.stderr.contains("warning: component \"reg\": secret /password is stored as a literal in .kiln/secrets.json (mode 0600)"), "{}", run.stderr);
    let state = fs::read_to_string(p.work().join(".kiln/components.json")).expect("state");
    assert!(!state.contains(secret), "{state}");
    let secrets_file = p.work().join(".kiln/secrets.json");
    assert!(fs::read_to_string(&secrets_file)
        .expect("secrets")
        .contains(secret));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&secrets_file)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let mut printed = String::new();
    for args in [
        vec!["component", "describe", "reg"],
        vec!["component", "describe", "reg", "--json"],
        vec!["component", "list"],
        vec!["component", "list", "--json"],
        vec!["-vv", "component", "list"],
    ] {
        let run = p.kiln(&args);
        run.ok();
        printed.push_str(&run.all_output());
    }
    assert!(!printed.contains(secret), "{printed}");
    assert!(printed.contains("\"password\": \"********\""), "{printed}");
    // An invalid secret is reported without its value.
    let run = p.kiln(&[
        "component",
        "update",
        "reg",
        "--set",
        "password=[\"not-a-string-secret\"]",
        "--plugins-dir",
        &d,
    ]);
    run.code(2);
    assert!(
        run.stderr.contains("/password:") && run.stderr.contains("value hidden"),
        "{}",
        run.stderr
    );
    assert!(
        !run.all_output().contains("not-a-string-secret"),
        "{}",
        run.all_output()
    );
    // Updating another field keeps the stored secret; a reference replaces it.
    p.kiln(&[
        "component",
        "update",
        "reg",
        "--set",
        "username=me",
        "--plugins-dir",
        &d,
    ])
    .ok();
    assert!(fs::read_to_string(&secrets_file)
        .expect("secrets")
        .contains(secret));
    let run = p.kiln(&[
        "component",
        "update",
        "reg",
        "--set",
        "password=${env:REG_PASSWORD}",
        "--plugins-dir",
        &d,
    ]);
    run.ok();
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    assert!(!fs::read_to_string(&secrets_file)
        .expect("secrets")
        .contains(secret));
    let v = p.kiln(&["component", "describe", "reg", "--json"]).json();
    assert_eq!(v["config"]["password"], "${env:REG_PASSWORD}");
}

#[test]
fn update_rename_delete() {
    let (p, d) = registry_project();
    p.kiln(&[
        "component",
        "register",
        "r1",
        "--type",
        "container-registry",
        "--flavor",
        "fixture-registry",
        "--set",
        "uri=a.io",
        "--set",
        "username=u",
        "--plugins-dir",
        &d,
    ])
    .ok();
    p.kiln(&[
        "component",
        "register",
        "b1",
        "--type",
        "image-builder",
        "--flavor",
        "echo",
        "--set",
        "timeout=30",
        "--plugins-dir",
        &d,
    ])
    .ok();
    // An update that fails validation changes nothing.
    let before = fs::read(p.work().join(".kiln/components.json")).expect("state");
    let run = p.kiln(&[
        "component",
        "update",
        "b1",
        "--set",
        "timeout=0",
        "--plugins-dir",
        &d,
    ]);
    run.code(2);
    assert!(
        run.stderr
            .contains("/timeout: 0 is less than the minimum of 1"),
        "{}",
        run.stderr
    );
    assert_eq!(
        fs::read(p.work().join(".kiln/components.json")).expect("state"),
        before
    );
    p.kiln(&[
        "component",
        "update",
        "r1",
        "--unset",
        "username",
        "--set",
        "uri=b.io",
        "--plugins-dir",
        &d,
    ])
    .ok();
    assert_eq!(
        p.kiln(&["component", "describe", "r1", "--json"]).json()["config"],
        json!({"uri": "b.io"})
    );
    let run = p.kiln(&[
        "component",
        "update",
        "r1",
        "--unset",
        "username",
        "--plugins-dir",
        &d,
    ]);
    run.code(2);
    assert!(
        run.stderr.contains("--unset username: not set"),
        "{}",
        run.stderr
    );
    p.kiln(&["component", "rename", "r1", "registry"]).ok();
    let run = p.kiln(&["component", "rename", "b1", "registry"]);
    run.code(2);
    assert!(run.stderr.contains("\"registry\" exists already"));
    let list = p
        .kiln(&[
            "component",
            "list",
            "--type",
            "container-registry",
            "--json",
        ])
        .json();
    let names: Vec<&str> = list["components"]
        .as_array()
        .expect("c")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["registry"]);
    p.kiln(&["component", "delete", "registry"]).ok();
    let run = p.kiln(&["component", "delete", "registry"]);
    run.code(2);
    assert!(
        run.stderr.contains("no component named \"registry\""),
        "{}",
        run.stderr
    );
    let table = p.kiln(&["component", "list"]);
    assert_eq!(
        table.stdout,
        "NAME  TYPE           FLAVOR  CONFIG\nb1    image-builder  echo    {\"timeout\":30}\n"
    );
}

#[test]
fn concurrent_registrations_lose_nothing() {
    let (p, d) = registry_project();
    let children: Vec<_> = (0..16)
        .map(|i| {
            let mut cmd = p.command(&[
                "component",
                "register",
                &format!("c{i}"),
                "--type",
                "container-registry",
                "--flavor",
                "fixture-registry",
                "--set",
                &format!("uri=reg{i}.example.com"),
                "--set",
                &format!("password=pw{i}"),
                "--plugins-dir",
                &d,
            ]);
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            cmd.spawn().expect("spawn")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let v = p.kiln(&["component", "list", "--json"]).json();
    assert_eq!(v["components"].as_array().expect("c").len(), 16);
    let secrets: Value =
        serde_json::from_str(&fs::read_to_string(p.work().join(".kiln/secrets.json")).expect("s"))
            .expect("json");
    assert_eq!(secrets["secrets"].as_object().expect("o").len(), 16);
}

#[test]
fn a_corrupt_state_file_is_named_and_left_alone() {
    let (p, d) = registry_project();
    let state = p.work().join(".kiln/components.json");
    fs::write(&state, "{\"version\": 1, \"components\": {\"x\": ").expect("write");
    for args in [
        vec!["component", "list"],
        vec![
            "component",
            "register",
            "n",
            "--type",
            "image-builder",
            "--flavor",
            "echo",
            "--plugins-dir",
            &d,
        ],
    ] {
        let run = p.kiln(&args);
        run.code(4);
        assert!(
            run.stderr
                .contains(&format!("state file {} is corrupt", state.display())),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("kiln will not overwrite it"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        fs::read_to_string(&state).expect("read"),
        "{\"version\": 1, \"components\": {\"x\": "
    );
}

#[test]
fn bad_usage_exits_2() {
    let p = TestProject::new();
    p.kiln(&["flavor", "list", "--type", "nonsense"]).code(2);
    p.kiln(&["frobnicate"]).code(2);
    assert!(p.kiln(&["--help"]).ok().stdout.contains("component"));
}

// ----------------------------------------------- instantiate stage, in-process

mod instantiate {
    use super::*;
    use kiln::plugins::Catalog;
    use kiln_plugin_api::{
        abi_stable::std_types::RString, BuildContext, BuildRequest, ErrorKind, Existence,
    };

    fn catalog(names: &[&str]) -> Catalog {
        let files: Vec<_> = names.iter().map(|n| fixture(n)).collect();
        Catalog::from_files(&files)
    }

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn a_panicking_build_becomes_an_error() {
        let c = catalog(&["good"]);
        let echo = c.find(None, "echo").expect("echo");
        let builder = echo
            .plugin
            .construct_builder("echo", &obj(json!({"panic_in_build": true})))
            .expect("constructed");
        assert!(builder.is_building_locally());
        let sink = kiln::plugins::log_sink("fixture-good");
        let cancel = kiln::plugins::CancelFlag::new().handle();
        let ctx = BuildContext {
            archive_path: "/nonexistent.tar".into(),
            gzip: false,
            sha1: "0".repeat(40).into(),
            size: 0,
            uploaded_uri: None.into(),
        };
        let err = builder
            .build(&BuildRequest::default(), &ctx, None.into(), sink, cancel)
            .into_result()
            .expect_err("panicked");
        assert_eq!(err.kind, ErrorKind::PANICKED);
        assert_eq!(
            err.message.as_str(),
            "plugin panicked in build: echo was told to panic"
        );
    }

    #[test]
    fn bad_config_at_construction_is_an_error_without_the_value() {
        let c = catalog(&["good"]);
        let echo = c.find(None, "echo").expect("echo");
        let err = echo
            .plugin
            .construct_builder("echo", &obj(json!({"token": 12345678})))
            .err()
            .expect("rejected");
        assert_eq!(err.kind, ErrorKind::INVALID_CONFIG);
        assert!(!err.message.contains("12345678"), "{}", err.message);
        let err = echo
            .plugin
            .construct_builder("nope", &obj(json!({})))
            .err()
            .expect("unknown");
        assert_eq!(err.kind, ErrorKind::UNKNOWN_FLAVOR);
    }

    #[test]
    fn registry_objects_work_across_the_boundary() {
        let c = catalog(&["good"]);
        let reg = c.find(None, "fixture-registry").expect("registry");
        let r = reg
            .plugin
            .construct_registry("fixture-registry", &obj(json!({"uri": "127.0.0.1:5000"})))
            .expect("constructed");
        assert_eq!(r.uri().as_str(), "127.0.0.1:5000");
        assert!(r
            .owns_image("127.0.0.1:5000/app:1".into())
            .into_result()
            .expect("ok"));
        let platforms = [RString::from("linux/amd64")];
        let e = r
            .image_exists("app".into(), "1".into(), platforms.as_slice().into())
            .into_result()
            .expect("ok");
        assert_eq!(e.state, Existence::ABSENT);
        assert!(r.auth().into_result().expect("ok").into_option().is_none());
    }

    #[test]
    fn the_context_hook_runs_without_constructing_and_newer_layouts_keep_it() {
        let c = catalog(&["good", "newer-layout"]);
        let echo = c.find(None, "echo").expect("echo");
        assert!(echo.plugin.has_context_hook());
        let req = BuildRequest {
            dockerfile: "Dockerfile".into(),
            ..BuildRequest::default()
        };
        let files = echo
            .plugin
            .customize_context("echo", &obj(json!({"prefix": "p-"})), &req)
            .expect("hook");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path.as_str(), "echo-context.txt");
        assert_eq!(files[0].contents.as_slice(), b"p-dockerfile=Dockerfile\n");
        let newer = c.find(None, "newer").expect("newer");
        assert!(newer.plugin.has_context_hook());
        assert!(newer
            .plugin
            .customize_context("newer", &obj(json!({})), &req)
            .expect("hook")
            .is_empty());
    }

    #[test]
    fn secret_references_resolve_only_at_instantiation() {
        let c = catalog(&["good"]);
        let reg = c.find(None, "fixture-registry").expect("registry");
        let schema = kiln::config::CompiledSchema::compile(&reg.descriptor.config_schema_json)
            .expect("schema");
        let stored = obj(json!({"uri": "127.0.0.1:5000", "password": "${env:KILN_TEST_PW}"}));
        let resolved = kiln::config::resolve_references("reg", &stored, schema.secrets(), |n| {
            (n == "KILN_TEST_PW").then(|| "pw".to_owned())
        })
        .expect("resolved");
        assert_eq!(resolved["password"], "pw");
        reg.plugin
            .construct_registry("fixture-registry", &resolved)
            .expect("constructed");
    }

    #[test]
    fn plugin_files_are_loaded_once_each() {
        let good = fixture("good");
        let c = Catalog::from_files(&[good.clone(), good]);
        assert_eq!(c.plugins_loaded, 1);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
    }
}
