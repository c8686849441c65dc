//! The instantiate stage, in-process: the host library loads fixture
//! plugins and calls them through the ABI.

use serde_json::{json, Value};

use kiln::plugins::Catalog;
use kiln_plugin_api::{client::RegistryCalls, BuildContext, BuildRequest, ErrorKind, Existence};

use crate::util::fixture;

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
    let sink = kiln::plugins::log_sink("fixture-good", &kiln::plugins::CancelFlag::new());
    let ctx = BuildContext {
        archive_path: "/nonexistent.tar".into(),
        gzip: false,
        sha1: "0".repeat(40),
        size: 0,
        uploaded_uri: None,
    };
    let err = builder
        .build(&BuildRequest::default(), &ctx, None, sink)
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
    assert_eq!(r.uri().expect("uri"), "127.0.0.1:5000");
    assert!(r.owns_image("127.0.0.1:5000/app:1").expect("ok"));
    let e = r
        .image_exists("app", "1", &["linux/amd64".to_owned()])
        .expect("ok");
    assert_eq!(e.state, Existence::ABSENT);
    assert!(r.auth().expect("ok").is_none());
}

#[test]
fn the_context_hook_runs_without_constructing() {
    let c = catalog(&["good"]);
    let echo = c.find(None, "echo").expect("echo");
    assert!(echo.plugin.has_context_hook());
    let req = BuildRequest {
        dockerfile: "Dockerfile".into(),
        ..BuildRequest::default()
    };
    let files = echo
        .plugin
        .customize_context(
            "echo",
            &obj(json!({"prefix": "p-"})),
            &req,
            kiln::plugins::log_sink("fixture-good", &kiln::plugins::CancelFlag::new()),
        )
        .expect("hook");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "echo-context.txt");
    assert_eq!(files[0].contents.as_slice(), b"p-dockerfile=Dockerfile\n");
}

#[test]
fn secret_references_resolve_only_at_instantiation() {
    let c = catalog(&["good"]);
    let reg = c.find(None, "fixture-registry").expect("registry");
    let schema =
        kiln::config::CompiledSchema::compile(&reg.descriptor.config_schema).expect("schema");
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
