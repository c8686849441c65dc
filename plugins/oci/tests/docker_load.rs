//! The archive `kiln-oci` writes, loaded by the real Docker Engine (20.10,
//! which needs Docker's `manifest.json`) and read by `skopeo` as an OCI
//! archive. Under CI=true a missing daemon or skopeo fails the test.

#![allow(clippy::disallowed_methods)] // Tests read CI where they need it.

use std::process::Command;

use kiln_oci::{
    context::ContextFiles,
    dispatch::{build, BuildInput, Built},
    image::Platform,
    outputs::archive::write_archive,
    sources::Base,
};

/// The Docker Engine, skopeo and a static busybox (under CI=true missing
/// ones fail the test).
#[allow(clippy::print_stderr)]
fn tools() -> bool {
    if !kiln_test_support::daemon_and(&["skopeo"]) {
        return false;
    }
    let busybox = std::path::Path::new("/bin/busybox").is_file();
    if !busybox {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("/bin/busybox is required (CI=true); scripts/test.sh installs it");
        }
        eprintln!("/bin/busybox missing: the docker load test did not run");
    }
    busybox
}

/// A context archive as the host makes it (a plain tar).
fn context_tar(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut h, path, *data).expect("append");
    }
    builder.into_inner().expect("tar")
}

#[test]
fn a_multi_stage_dockerfile_builds_without_a_daemon_and_runs() {
    if !tools() {
        return;
    }
    let busybox = std::fs::read("/bin/busybox").expect("busybox");
    let dir = tempfile::tempdir().expect("tempdir");
    let context = dir.path().join("context.tar");
    std::fs::write(
        &context,
        context_tar(&[
            ("bin/busybox", &busybox, 0o755),
            ("app/message.txt", b"copied from the context\n", 0o644),
        ]),
    )
    .expect("context");
    let dockerfile = r#"# a daemonless build
FROM scratch AS tools
COPY bin/busybox /bin/busybox

FROM scratch
ARG GREETING=hello
ENV GREETING=$GREETING \
    PATH=/bin
COPY --from=tools /bin/busybox /bin/
COPY --chmod=600 --chown=65534:65534 app/ /srv/app/
WORKDIR /srv/app
USER 65534
LABEL org.kiln.stage=final
ENTRYPOINT ["/bin/busybox", "sh", "-c"]
CMD ["echo \"$GREETING\"; pwd; id -u; cat message.txt; stat -c '%a %u' message.txt"]
"#;
    let files = ContextFiles::open(&context).expect("context");
    let run_build = |created: u64, target: Option<&str>| -> Built {
        build(&BuildInput {
            target,
            ..input(dockerfile, &files, created)
        })
        .expect("build")
    };
    let image = run_build(0, None).image;
    assert_eq!(
        image.digest(),
        run_build(0, None).image.digest(),
        "reproducible"
    );
    assert_ne!(
        image.digest(),
        run_build(1_700_000_000, None).image.digest(),
        "created is recorded"
    );
    let archive = dir.path().join("image.tar");
    let tag = format!("kiln-oci-multi:{}", std::process::id());
    write_archive(
        &kiln_oci::image::Artifact::Image(image),
        std::slice::from_ref(&tag),
        &archive,
        &|| false,
    )
    .expect("archive");
    let load = Command::new("docker")
        .arg("load")
        .arg("-i")
        .arg(&archive)
        .output()
        .expect("docker load");
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let out = Command::new("docker")
        .args(["run", "--rm", &tag])
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bonjour\n/srv/app\n65534\ncopied from the context\n600 65534\n"
    );
    let label = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"org.kiln.stage\"}}",
            &tag,
        ])
        .output()
        .expect("inspect");
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "final");
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();

    // The target stage alone.
    let tools_only = run_build(0, Some("tools"));
    assert_eq!(tools_only.image.layers.len(), 1);
    assert_eq!(tools_only.layers_made, 1);
}

fn no_pull(name: &str, _: &Platform) -> Result<Base, kiln_distribution::CallError> {
    Err(kiln_distribution::CallError::Failed(format!(
        "no registry in this test: {name}"
    )))
}

fn input<'a>(dockerfile: &'a str, context: &'a ContextFiles, created: u64) -> BuildInput<'a> {
    BuildInput {
        dockerfile,
        context,
        context_sha1: None,
        build_args: [("GREETING".to_string(), "bonjour".to_string())].into(),
        target: None,
        labels: Default::default(),
        created,
        platform: Platform::parse("linux/amd64").expect("platform"),
        contexts: Default::default(),
        no_cache: false,
        store: None,
        pull: &no_pull,
        runner: None,
        events: None,
    }
}
