//! Projects and components: the project found by walking up, register /
//! update / rename / delete with schema validation, secrets kept out of the
//! state file, concurrent writers, corrupt state, usage errors.

use std::fs;

use serde_json::{json, Value};

use crate::util::{Run, TestProject};

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

fn registry_project() -> (TestProject, String) {
    let p = TestProject::initialised();
    let d = p.plugins(&["good"]).to_str().expect("utf8").to_owned();
    (p, d)
}

/// `kiln component register NAME` of the fixture registry, with `extra`.
fn register_fixture(p: &TestProject, plugins: &str, name: &str, extra: &[&str]) -> Run {
    let mut all = vec![
        "component",
        "register",
        name,
        "--type",
        "container-registry",
        "--flavor",
        "fixture-registry",
        "--plugins-dir",
        plugins,
    ];
    all.extend_from_slice(extra);
    p.kiln(&all)
}

#[test]
fn register_validates_against_the_schema() {
    let (p, d) = registry_project();
    let reg = |args: &[&str]| register_fixture(&p, &d, "reg", args);
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
    // A type error (from a config file: `--set` keeps a string field a
    // string) names the field and the types it takes.
    p.file("typed.json", r#"{"uri": "localhost:5000", "username": 5}"#);
    let run = reg(&["--config", "typed.json"]);
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
    p.file(
        "bad-secret.json",
        r#"{"uri": "127.0.0.1:5000", "password": ["not-a-string-secret"]}"#,
    );
    let run = p.kiln(&[
        "component",
        "register",
        "other",
        "--type",
        "container-registry",
        "--flavor",
        "fixture-registry",
        "--config",
        "bad-secret.json",
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

/// Registry addresses are checked when registered, by the one normalisation
/// that later names images in them: nothing wrong is stored, and a password
/// written into the address is never echoed or kept.
#[test]
fn registry_addresses_are_checked_at_registration() {
    let (p, d) = registry_project();
    let reg =
        |name: &str, uri: &str| register_fixture(&p, &d, name, &["--set", &format!("uri={uri}")]);
    for (uri, says) in [
        ("team", "not a registry host"),
        ("reg.io:99999", "1 to 65535"),
        ("reg.io/a//b", "not a repository path"),
        ("https://me:hunter22@reg.io", "holds credentials"),
    ] {
        let run = reg("bad", uri);
        run.code(2);
        assert!(run.stderr.contains(says), "{uri}: {}", run.stderr);
        assert!(!run.stderr.contains("hunter22"), "{}", run.stderr);
    }
    let state = fs::read_to_string(p.work().join(".kiln/components.json")).unwrap_or_default();
    assert!(
        !state.contains("\"bad\"") && !state.contains("hunter22"),
        "{state}"
    );
    for (name, uri) in [("a", "reg.example.com:5000"), ("b", "localhost:5000/team")] {
        reg(name, uri).ok();
    }
}

/// `--set` follows the schema's types (a digit-only secret stays a string),
/// and a mistyped `--set` never echoes what may be a secret.
#[test]
fn set_keeps_a_digit_only_secret_a_string_and_never_echoes_a_typo() {
    let (p, d) = registry_project();
    let reg = |extra: &[&str]| {
        register_fixture(
            &p,
            &d,
            "reg",
            &[&["--set", "uri=127.0.0.1:5000"], extra].concat(),
        )
    };
    let run = reg(&["--set", "password 31415926535"]);
    run.code(2);
    assert!(run.stderr.contains("KEY=VALUE"), "{}", run.stderr);
    assert!(!run.stderr.contains("31415926535"), "{}", run.stderr);
    reg(&["--set", "password=31415926535"]).ok();
    let secrets = fs::read_to_string(p.work().join(".kiln/secrets.json")).expect("secrets");
    let v: Value = serde_json::from_str(&secrets).expect("json");
    assert_eq!(v["secrets"]["reg"]["/password"], "31415926535", "{secrets}");
}

/// A state lock another kiln holds (stopped in a debugger, a stopped job) is
/// waited for with a message, then given up on (exit 4), never forever.
#[test]
fn a_held_state_lock_is_named_and_given_up_on() {
    let (p, d) = registry_project();
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p.work().join(".kiln/state.lock"))
        .expect("open lock");
    lock.lock().expect("hold the lock");
    let started = std::time::Instant::now();
    let run = p.kiln_env(
        &[
            "component",
            "register",
            "reg",
            "--type",
            "container-registry",
            "--flavor",
            "fixture-registry",
            "--plugins-dir",
            &d,
            "--set",
            "uri=127.0.0.1:5000",
        ],
        &[("KILN_LOCK_TIMEOUT", "2")],
    );
    run.code(4);
    assert!(
        run.stderr.contains("waiting for the state lock") && run.stderr.contains("gave up"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    lock.unlock().expect("release");
    register_fixture(&p, &d, "reg", &["--set", "uri=127.0.0.1:5000"]).ok();
}
