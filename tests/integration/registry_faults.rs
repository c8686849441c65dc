//! Registries that lie, as proxies, captive portals and broken servers do:
//! faults a real registry cannot be made to produce, injected by a small
//! HTTP stand-in on 127.0.0.1. An answer counts as "exists" only with a
//! manifest whose digest is the one named; a push succeeds only when the
//! registry confirms the digest kiln sent.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
};

use sha2::{Digest, Sha256};

use crate::util::{shipped_plugin, write, TestProject};

/// One answer: status line, extra headers, body.
struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn reply(status: &'static str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.into(),
    }
}

/// A stand-in registry on 127.0.0.1: `route(method, path)` answers each
/// request. Returns its `127.0.0.1:port`.
fn stand_in(route: impl Fn(&str, &str) -> Reply + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (method, path) = (
                words.next().unwrap_or("").to_string(),
                words.next().unwrap_or("").to_string(),
            );
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let r = route(&method, &path);
            let mut head = format!(
                "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                r.status,
                r.body.len()
            );
            for (k, v) in &r.headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let mut stream = reader.into_inner();
            let _ = stream.write_all(head.as_bytes());
            if method != "HEAD" {
                let _ = stream.write_all(&r.body);
            }
        }
    });
    host
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A well-formed image manifest (what a registry would serve).
fn manifest() -> Vec<u8> {
    let blob = format!("sha256:{}", "ab".repeat(32));
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{blob}","size":2}},"layers":[]}}"#
    )
    .into_bytes()
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn plugins_dir(p: &TestProject, packages: &[&str]) -> String {
    let dir = p.root().join("plugins");
    fs::create_dir_all(&dir).expect("mkdir");
    for package in packages {
        let f = shipped_plugin(package);
        fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy plugin");
    }
    dir.to_string_lossy().into_owned()
}

#[test]
fn a_registry_answer_is_exists_only_with_a_manifest_and_its_own_digest() {
    let good = manifest();
    let good_digest = digest_of(&good);
    let served = good.clone();
    let host = stand_in(move |_method, path| {
        let tag = path.rsplit('/').next().unwrap_or("");
        match tag {
            // A captive portal: 200 and a login page, no digest.
            "portal" => reply(
                "200 OK",
                &[("Content-Type", "text/html")],
                "<html><body>Please log in</body></html>",
            ),
            // Random bytes with a well-formed digest header.
            "junk" => reply(
                "200 OK",
                &[(
                    "Docker-Content-Digest",
                    &format!("sha256:{}", "cd".repeat(32)),
                )],
                vec![0x8bu8, 0x00, 0xff, 0x13, 0x37],
            ),
            // A manifest whose named digest is not its own.
            "liar" => reply(
                "200 OK",
                &[
                    ("Content-Type", OCI_MANIFEST),
                    (
                        "Docker-Content-Digest",
                        &format!("sha256:{}", "ef".repeat(32)),
                    ),
                ],
                served.clone(),
            ),
            // A digest header that is no digest.
            "malformed" => reply(
                "200 OK",
                &[
                    ("Content-Type", OCI_MANIFEST),
                    ("Docker-Content-Digest", "sha256:<script>"),
                ],
                served.clone(),
            ),
            // No digest header at all, but a real manifest: its own digest.
            "plain" => reply("200 OK", &[("Content-Type", OCI_MANIFEST)], served.clone()),
            // A 1 MiB error page full of escape sequences.
            "huge" => reply(
                "400 Bad Request",
                &[("Content-Type", "text/plain")],
                "\u{1b}[2Jerror ".repeat(150_000),
            ),
            _ => reply("404 Not Found", &[], ""),
        }
    });
    let p = TestProject::new();
    let plugins = plugins_dir(&p, &["kiln-registry"]);
    let config = format!(r#"{{"uri":"{host}","retries":0}}"#);
    let ask = |tag: &str| {
        p.kiln(&[
            "--plugins-dir",
            &plugins,
            "image",
            "exists",
            &format!("{host}/app:{tag}"),
            "--registry-config",
            &config,
            "--json",
        ])
    };
    for (tag, says) in [
        ("portal", "HTML page"),
        ("junk", "not JSON"),
        ("liar", "names digest"),
        ("malformed", "names digest"),
        ("huge", "(cut)"),
    ] {
        let r = ask(tag);
        r.code(7);
        let v = r.json();
        assert_eq!(v["state"], "unknown", "{tag}: {v}");
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(all.contains(says), "{tag}: {all}");
        assert!(
            !all.contains('\u{1b}'),
            "{tag}: a raw escape reached the output"
        );
        assert!(all.len() < 4000, "{tag}: {} bytes of output", all.len());
    }
    let r = ask("plain");
    r.code(0);
    assert_eq!(
        r.json()["digest"],
        format!("{host}/app@{good_digest}"),
        "the digest is the content's own"
    );
    ask("missing").code(1);
}

/// What a registry answers a push: `confirm` decides the manifest `PUT`.
fn push_to(confirm: &'static str) -> (crate::util::Run, String) {
    let host = stand_in(move |method, path| match (method, path) {
        ("POST", p) if p.ends_with("/blobs/uploads/") => reply(
            "202 Accepted",
            &[("Location", "/v2/app/blobs/uploads/one")],
            "",
        ),
        ("DELETE", _) => reply("204 No Content", &[], ""),
        // Every blob is "already there": only the manifest matters.
        ("HEAD", p) if p.contains("/blobs/") => reply("200 OK", &[], ""),
        ("PUT", p) if p.contains("/manifests/") => match confirm {
            "other" => reply(
                "201 Created",
                &[(
                    "Docker-Content-Digest",
                    &format!("sha256:{}", "12".repeat(32)),
                )],
                "",
            ),
            _ => reply("201 Created", &[], ""),
        },
        // It stores nothing: the manifest is never there afterwards.
        _ => reply("404 Not Found", &[], ""),
    });
    let p = TestProject::new();
    let plugins = plugins_dir(&p, &["kiln-registry", "kiln-oci"]);
    write(&p.work().join("app"), "a.txt", "hello\n");
    write(
        &p.work().join("app"),
        "Dockerfile",
        "FROM scratch\nCOPY a.txt /\n",
    );
    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .tag(&format!("{host}/app:1"))
        .args([
            "--push",
            "--builder-flavor",
            "oci",
            "--builder-config",
            r#"{"retries":0}"#,
            "--registry-config",
            &format!(r#"{{"uri":"{host}","retries":0}}"#),
        ])
        .run();
    (r, host)
}

#[test]
fn a_push_the_registry_does_not_confirm_fails() {
    let (r, _) = push_to("nothing");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stderr.contains("does not have") && r.stderr.contains("afterwards"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("pushed"), "{}", r.stdout);
    let (r, _) = push_to("other");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("answered with digest"), "{}", r.stderr);
}

/// A manifest naming `config` as its config (no layers).
fn manifest_for(config: &[u8]) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
        digest_of(config),
        config.len()
    )
    .into_bytes()
}

/// The existence check believes an existing image's record of its inputs
/// only when the registry serves its config, matching its digest and of a
/// bounded size: a config too large, one whose content is not its digest's
/// or one whose record is not kiln's makes the image built again, naming
/// why (escapes never reach the terminal). An image whose config records
/// nothing (another tool's) is skipped, trusting its tag.
#[test]
fn an_existing_images_record_is_believed_only_as_the_registry_proves_it() {
    let foreign = br#"{"architecture":"amd64","os":"linux","config":{}}"#.to_vec();
    let escapes = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"dev.kiln.inputs": "{\"\u{1b}[2Jcontext\": \"0123456789abcdef\"}"}},
    }))
    .expect("json");
    let huge = vec![b' '; 5 << 20];
    let lying = manifest_for(b"{}");
    let configs = [
        ("foreign", manifest_for(&foreign), foreign),
        ("escapes", manifest_for(&escapes), escapes),
        ("huge", manifest_for(&huge), huge),
        // The manifest names `{}`; the blob served under that digest is not it.
        ("lying", lying, b"{\"config\":{}}".to_vec()),
    ];
    let routes = configs.clone();
    let host = stand_in(move |_method, path| {
        for (tag, manifest, config) in &routes {
            if path == format!("/v2/app/manifests/{tag}")
                || path == format!("/v2/app/manifests/{}", digest_of(manifest))
            {
                return reply(
                    "200 OK",
                    &[("Content-Type", OCI_MANIFEST)],
                    manifest.clone(),
                );
            }
            let named: serde_json::Value = serde_json::from_slice(manifest).expect("manifest");
            if path
                == format!(
                    "/v2/app/blobs/{}",
                    named["config"]["digest"].as_str().unwrap_or("")
                )
            {
                return reply("200 OK", &[], config.clone());
            }
        }
        reply("404 Not Found", &[], "")
    });
    let p = TestProject::initialised();
    let plugins = plugins_dir(&p, &["kiln-registry", "kiln-oci"]);
    crate::registry::register(&p, &plugins, "reg", &[&format!("uri={host}"), "retries=0"]);
    write(&p.work().join("app"), "a.txt", "hello\n");
    write(
        &p.work().join("app"),
        "Dockerfile",
        "FROM scratch\nCOPY a.txt /\n",
    );
    let build = |tag: &str| {
        p.cmd()
            .plugins(&plugins)
            .build("app")
            .tag(&format!("{host}/app:{tag}"))
            .registry("reg")
            .builder_flavor("oci")
            .args(["--builder-config", r#"{"retries":0}"#])
            .json()
            .run()
    };
    let r = build("foreign");
    r.ok();
    let v = r.json();
    assert_eq!(v["status"], "skipped", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or("")
            .contains("records no kiln inputs"),
        "{v}"
    );
    for (tag, says) in [
        ("escapes", "not kiln's record"),
        ("huge", "larger than"),
        ("lying", "sent content with digest"),
    ] {
        // Built again (then the push to this registry, which stores
        // nothing, fails): the reason says why the skip was not believed.
        let r = build(tag);
        assert_ne!(r.code, 0, "{tag}: {}", r.stdout);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(all.contains("so a skip could be wrong"), "{tag}: {all}");
        assert!(all.contains(says), "{tag}: {all}");
        assert!(
            !all.contains('\u{1b}'),
            "{tag}: a raw escape reached the output"
        );
    }
}
