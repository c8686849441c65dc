//! `kiln build --dry-run`: the plan users read, pinned as snapshots (text
//! and `--json`), and flags that are refused before anything is loaded.

use serde_json::Value;

use crate::util::{shipped_plugin, Run, TestProject};

/// A project with the shipped `oci` plugin and a context folder `app`.
fn project() -> (TestProject, String) {
    let p = TestProject::new();
    let dir = p.root().join("plugins");
    let oci = shipped_plugin("kiln-oci");
    std::fs::copy(&oci, dir.join(oci.file_name().expect("name"))).expect("copy plugin");
    p.file(
        "app/Dockerfile",
        "FROM base AS final\nCOPY --from=busybox:1.36 /bin/busybox /bin/\nCOPY a.txt /a.txt\n",
    );
    p.file("app/a.txt", "hello\n");
    (p, dir.to_string_lossy().into_owned())
}

/// Replace what changes from run to run (the context hash, which covers
/// file times, the derived tag, the temp folder, seconds) with placeholders.
fn normalise(p: &TestProject, text: &str, plan: &Value) -> String {
    let sha1 = plan["context_sha1"].as_str().expect("sha1");
    let image = plan["image"].as_str().expect("image");
    let tag = image.rsplit_once(':').map(|(_, t)| t).expect("tag");
    let work = p.work().to_string_lossy().into_owned();
    text.replace(sha1, "<SHA1>")
        .replace(tag, "<TAG>")
        .replace(&work, "<WORK>")
}

const FULL: &[&str] = &[
    "app",
    "-t",
    "example.org/team/app",
    "--build-arg",
    "B=2",
    "--build-arg",
    "A=1",
    "--label",
    "org.opencontainers.image.title=app",
    "--target",
    "final",
    "--platform",
    "linux/arm64",
    "--output",
    "type=oci,dest=out/app.tar",
    "--build-context",
    "base=oci-layout://layouts/base:1",
    "--no-cache",
    "--dry-run",
];

fn plan(p: &TestProject, plugins: &str, extra: &[&str]) -> Run {
    p.cmd().plugins(plugins).arg("build").args(extra).run()
}

#[test]
fn the_dry_run_text_is_the_plan() {
    let (p, plugins) = project();
    let json = plan(&p, &plugins, &[FULL, &["--json"]].concat())
        .ok()
        .json();
    let text = plan(&p, &plugins, FULL).ok().stdout.clone();
    assert_eq!(
        normalise(&p, &text, &json),
        "plan: build example.org/team/app:<TAG> with flavor oci
  context: 2 files, 3072 bytes, sha1 <SHA1>
  dockerfile: Dockerfile
  build args: B=2 A=1
  labels: org.opencontainers.image.title=app
  target: final
  platform: linux/arm64
  build context: base=oci-layout://<WORK>/layouts/base:1
  base: base (unresolved: a dry run contacts no registry)
  base: busybox:1.36 (unresolved: a dry run contacts no registry)
  output: oci archive <WORK>/out/app.tar
  options: --no-cache
  checks: none configured: the image will be built
"
    );
}

#[test]
fn the_dry_run_json_is_the_plan() {
    let (p, plugins) = project();
    let mut json = plan(&p, &plugins, &[FULL, &["--json"]].concat())
        .ok()
        .json();
    assert!(json["seconds"].as_f64().expect("seconds") >= 0.0);
    json["seconds"] = Value::from(0);
    let text = serde_json::to_string_pretty(&json).expect("json");
    assert_eq!(
        normalise(&p, &text, &json),
        r#"{
  "image": "example.org/team/app:<TAG>",
  "images": [
    "example.org/team/app:<TAG>"
  ],
  "builder": "flavor oci",
  "flavor": "oci",
  "registry": null,
  "dockerfile": "Dockerfile",
  "context_sha1": "<SHA1>",
  "context_bytes": 3072,
  "context_files": 2,
  "checks": "none configured: the image will be built",
  "request": {
    "build_args": {
      "B": "2",
      "A": "1"
    },
    "labels": {
      "org.opencontainers.image.title": "app"
    },
    "target": "final",
    "platform": "linux/arm64",
    "no_cache": true,
    "pull": false,
    "output": {
      "type": "oci",
      "dest": "<WORK>/out/app.tar"
    },
    "build_contexts": {
      "base": "oci-layout://<WORK>/layouts/base:1"
    }
  },
  "bases": [
    {
      "image": "base",
      "digest": null,
      "unresolved": "a dry run contacts no registry"
    },
    {
      "image": "busybox:1.36",
      "digest": null,
      "unresolved": "a dry run contacts no registry"
    }
  ],
  "on_unknown": "build",
  "digest": null,
  "pushed": null,
  "image_id": null,
  "status": "planned",
  "reason": "dry run: nothing was built",
  "seconds": 0
}"#
    );
}

#[test]
fn bad_flags_fail_before_any_plugin_is_loaded_or_file_read() {
    // No plugins, no context folder: only the flags can be at fault.
    let p = TestProject::new();
    for (flags, needle) in [
        (&["--output", "type=oci"][..], "--output"),
        (&["--build-context", "x=ftp://y"], "--build-context"),
        (&["--platform", "linux"], "--platform"),
        (
            &["--platform", "linux/amd64,linux/amd64"],
            "platform linux/amd64 is named twice",
        ),
        (&["--secret", "src=/x"], "id=ID is required"),
        (&["--secret", "id=a,src=/x,env=B"], "not both"),
        (&["-t", "Hello:1"], "invalid reference format"),
        (&["-t", "hello::x"], "invalid reference format"),
        (&["--build-arg", "NO-EQUALS"], "--build-arg"),
    ] {
        let r = p.kiln(&[&["build", "missing-dir"][..], flags].concat());
        r.code(2);
        assert!(r.stderr.contains(needle), "{flags:?}: {}", r.stderr);
        assert!(
            !r.stderr.contains("missing-dir"),
            "{flags:?} was checked after the context: {}",
            r.stderr
        );
    }
}
