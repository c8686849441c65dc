//! The archive `kiln-oci` writes, loaded by the real Docker Engine (20.10,
//! which needs Docker's `manifest.json`) and read by `skopeo` as an OCI
//! archive. Under CI=true a missing daemon or skopeo fails the test.

use std::process::Command;

use kiln_oci::image::{assemble, layer, write_archive, LayerFile, RuntimeConfig};

#[allow(clippy::print_stderr)]
fn tools() -> bool {
    let ok = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let up = ok("docker", &["info"])
        && ok("skopeo", &["--version"])
        && std::path::Path::new("/bin/busybox").is_file();
    if !up {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("docker, skopeo and /bin/busybox are required (CI=true); scripts/test.sh installs them");
        }
        eprintln!("docker, skopeo or busybox missing: the docker load test did not run");
    }
    up
}

#[test]
fn docker_loads_and_runs_the_image_and_skopeo_agrees_on_the_digest() {
    if !tools() {
        return;
    }
    let busybox = std::fs::read("/bin/busybox").expect("busybox");
    let files = [
        LayerFile {
            path: "bin/busybox".into(),
            data: busybox,
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
        LayerFile {
            path: "app/hello.txt".into(),
            data: b"hello from a daemonless image\n".to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        },
    ];
    let runtime = RuntimeConfig {
        env: vec!["PATH=/bin".into(), "GREETING=hi there".into()],
        entrypoint: Some(vec!["/bin/busybox".into(), "cat".into()]),
        cmd: Some(vec!["/app/hello.txt".into()]),
        working_dir: Some("/app".into()),
        user: Some("65534:65534".into()),
        ..Default::default()
    };
    let image = assemble(
        &runtime,
        vec![layer(&files, 0).expect("layer")],
        &["COPY . /".into()],
        0,
        "amd64",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("image.tar");
    let tag = format!("kiln-oci-test:{}", std::process::id());
    write_archive(&image, &tag, &archive).expect("archive");

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
    let run = |args: &[&str]| {
        let out = Command::new("docker")
            .args(["run", "--rm"])
            .args(args)
            .output()
            .expect("docker run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&[&tag]), "hello from a daemonless image\n");
    let shell = run(&[
        "--entrypoint",
        "/bin/busybox",
        &tag,
        "sh",
        "-c",
        "echo \"$GREETING\"; pwd; id -u",
    ]);
    assert_eq!(shell, "hi there\n/app\n65534\n");

    let inspect = Command::new("skopeo")
        .args(["inspect", "--format", "{{.Digest}}"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .expect("skopeo");
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        image.digest()
    );
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
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
    let build = |created: u64| {
        kiln_oci::build::build(&kiln_oci::build::BuildInput {
            dockerfile,
            context: &context,
            build_args: [("GREETING".to_string(), "bonjour".to_string())].into(),
            target: None,
            labels: Default::default(),
            created,
            architecture: "amd64",
        })
        .expect("build")
    };
    let image = build(0);
    assert_eq!(image.digest(), build(0).digest(), "reproducible");
    assert_ne!(
        image.digest(),
        build(1_700_000_000).digest(),
        "created is recorded"
    );
    let archive = dir.path().join("image.tar");
    let tag = format!("kiln-oci-multi:{}", std::process::id());
    write_archive(&image, &tag, &archive).expect("archive");
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

    // The target stage, and RUN refused naming its line.
    let tools_only = kiln_oci::build::build(&kiln_oci::build::BuildInput {
        dockerfile,
        context: &context,
        build_args: Default::default(),
        target: Some("tools"),
        labels: Default::default(),
        created: 0,
        architecture: "amd64",
    })
    .expect("target");
    assert_eq!(tools_only.layers.len(), 1);
}
