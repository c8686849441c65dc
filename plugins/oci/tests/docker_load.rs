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
