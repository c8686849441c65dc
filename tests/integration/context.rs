//! `kiln context ls | pack | upload` against real trees, and against what
//! the real Docker CLI sends for the same tree and ignore file.

use std::{
    fs,
    os::unix::fs::{symlink, PermissionsExt},
    path::Path,
    process::Command,
};

use serde_json::Value;
use sha1::{Digest, Sha1};

use crate::{
    docker_cli::{docker_cli, Capture},
    util::{fixture, shipped_plugin, write, TestProject},
};

/// One archive entry, as compared between archives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    path: String,
    kind: char,
    mode: u32,
    link: String,
    sha1: String,
}

fn items(tar_bytes: &[u8]) -> Vec<Item> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let header = entry.header().clone();
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let link = entry
            .link_name()
            .expect("link name")
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("data");
        out.push(Item {
            path: path.trim_end_matches('/').to_string(),
            kind: header.entry_type().as_byte() as char,
            mode: header.mode().expect("mode") & 0o7777,
            link,
            sha1: format!("{:x}", Sha1::digest(&data)),
        });
    }
    out
}

fn pack(p: &TestProject, dir: &str, extra: &[&str]) -> (Value, Vec<u8>) {
    let out = p.root().join(format!("out-{}.tar", rand_suffix()));
    let out_s = out.to_str().expect("utf-8");
    let mut args = vec!["context", "pack", dir, "-o", out_s, "--json"];
    args.extend_from_slice(extra);
    let summary = p.kiln(&args).ok().json();
    let bytes = fs::read(&out).expect("read archive");
    (summary, bytes)
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

fn ls(p: &TestProject, args: &[&str]) -> Vec<String> {
    let mut all = vec!["context", "ls"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_value(p.kiln(&all).ok().json()).expect("array of paths")
}

#[test]
fn ls_lists_files_and_symlinks_in_byte_order() {
    let p = TestProject::new();
    let c = p.work().join("ctx");
    write(&c, "Dockerfile", "FROM scratch\n");
    write(&c, "a.txt", "a");
    write(&c, "a/b", "b");
    write(&c, "a-b", "x");
    write(&c, "with space/ünï [x].py", "u");
    write(&c, "logs/app.log", "log");
    write(&c, "logs/keep.log", "keep");
    write(&c, "node_modules/x/index.js", "js");
    write(&c, "src/node_modules/y.js", "js");
    symlink("a.txt", c.join("link")).expect("symlink");
    symlink("/etc/passwd", c.join("outside")).expect("symlink");
    write(
        &c,
        ".dockerignore",
        "# comment\nnode_modules\n**/*.log\n!logs/keep.log\n",
    );
    let got = ls(&p, &["ctx"]);
    assert_eq!(
        got,
        vec![
            ".dockerignore",
            "Dockerfile",
            "a-b",
            "a.txt",
            "a/b",
            "link",
            "logs/keep.log",
            "outside",
            "src/node_modules/y.js",
            "with space/ünï [x].py",
        ]
    );
    // Plain output: one path per line, same order.
    let plain = p.kiln(&["context", "ls", "ctx"]).ok().stdout.clone();
    assert_eq!(plain.lines().collect::<Vec<_>>(), got);
}

#[test]
fn dockerfile_and_dockerignore_are_always_sent() {
    let p = TestProject::new();
    let c = p.work().join("ctx");
    write(&c, "Dockerfile", "FROM scratch\n");
    write(&c, "sub/Dockerfile.dev", "FROM scratch\n");
    write(&c, "sub/other", "o");
    write(&c, "keep", "k");
    write(&c, ".dockerignore", "*\n!keep\n");
    assert_eq!(
        ls(&p, &["ctx"]),
        vec![".dockerignore", "Dockerfile", "keep"]
    );
    // -f is relative to the working directory, as for `docker build -f`.
    assert_eq!(
        ls(&p, &["ctx", "-f", "ctx/sub/Dockerfile.dev"]),
        vec![".dockerignore", "keep", "sub/Dockerfile.dev"]
    );
}

#[test]
fn ignore_file_precedence() {
    let p = TestProject::new();
    let c = p.work().join("ctx");
    write(&c, "Dockerfile", "FROM scratch\n");
    write(&c, "app.Dockerfile", "FROM scratch\n");
    write(&c, "a", "a");
    write(&c, "b", "b");
    write(&c, ".dockerignore", "a\n");
    write(&c, "app.Dockerfile.dockerignore", "b\n");
    write(&c, "custom.ignore", "a\nb\n");
    // Root .dockerignore by default.
    assert!(!ls(&p, &["ctx"]).contains(&"a".to_string()));
    // <Dockerfile>.dockerignore beside the Dockerfile wins, as in BuildKit.
    let by_dockerfile = ls(&p, &["ctx", "-f", "ctx/app.Dockerfile"]);
    assert!(by_dockerfile.contains(&"a".to_string()));
    assert!(!by_dockerfile.contains(&"b".to_string()));
    // An explicit file wins over both.
    let explicit = ls(
        &p,
        &[
            "ctx",
            "-f",
            "ctx/app.Dockerfile",
            "--dockerignore",
            "ctx/custom.ignore",
        ],
    );
    assert!(!explicit.contains(&"a".to_string()) && !explicit.contains(&"b".to_string()));
    // A missing explicit file is an error naming it.
    let r = p.kiln(&["context", "ls", "ctx", "--dockerignore", "nope.ignore"]);
    r.code(2);
    assert!(r.stderr.contains("nope.ignore"), "{}", r.stderr);
}

#[test]
fn bad_patterns_and_bad_paths_exit_2_naming_them() {
    let p = TestProject::new();
    let c = p.work().join("ctx");
    write(&c, "Dockerfile", "FROM scratch\n");
    write(&c, ".dockerignore", "ok\n\n# fine\n[a-\n");
    let r = p.kiln(&["context", "ls", "ctx"]);
    r.code(2);
    assert!(
        r.stderr
            .contains(".dockerignore: line 4: syntax error in pattern"),
        "{}",
        r.stderr
    );
    write(&c, ".dockerignore", "a\n!\n");
    let r = p.kiln(&["context", "pack", "ctx", "-o", "out.tar"]);
    r.code(2);
    assert!(
        r.stderr.contains("line 2: illegal exclusion pattern"),
        "{}",
        r.stderr
    );
    assert!(!p.work().join("out.tar").exists());

    fs::remove_file(c.join(".dockerignore")).expect("rm");
    let r = p.kiln(&["context", "ls", "missing-dir"]);
    r.code(2);
    assert!(r.stderr.contains("missing-dir"), "{}", r.stderr);
    let r = p.kiln(&["context", "ls", "ctx", "-f", "ctx/Nope"]);
    r.code(2);
    assert!(r.stderr.contains("cannot locate Dockerfile") && r.stderr.contains("Nope"));
}

/// Make the same tree twice with different mtimes, creation order and
/// modes of the root, as two checkouts on two machines would.
fn checkout(root: &Path, reverse: bool, mtime: i64) {
    let mut files: Vec<(String, String)> = (0..40)
        .map(|i| {
            (
                format!("dir{}/sub{}/file{i}.txt", i % 3, i % 5),
                format!("content {i}\n").repeat(i + 1),
            )
        })
        .collect();
    files.push(("Dockerfile".into(), "FROM scratch\nCOPY . /\n".into()));
    files.push(("bin/run.sh".into(), "#!/bin/sh\n".into()));
    files.push((
        format!("deep/{}/long-name.txt", "x".repeat(120)),
        "long".into(),
    ));
    if reverse {
        files.reverse();
    }
    for (rel, contents) in &files {
        write(root, rel, contents);
    }
    fs::set_permissions(root.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    symlink(
        format!("../{}", "y".repeat(150)),
        root.join("bin/long-link"),
    )
    .expect("symlink");
    let stamp = filetime_like(mtime);
    for (rel, _) in &files {
        let status = Command::new("touch")
            .args(["-h", "-d", &stamp])
            .arg(root.join(rel))
            .status()
            .expect("touch");
        assert!(status.success());
    }
}

fn filetime_like(seconds: i64) -> String {
    format!("@{seconds}")
}

#[test]
fn archives_are_byte_identical_across_checkouts() {
    let p = TestProject::new();
    checkout(&p.work().join("one"), false, 1_000_000_000);
    checkout(&p.work().join("two"), true, 1_700_000_000);
    let (s1, t1) = pack(&p, "one", &[]);
    let (s2, t2) = pack(&p, "two", &[]);
    assert_eq!(s1["sha1"], s2["sha1"]);
    assert_eq!(t1, t2, "uncompressed archives differ");
    let (g1, gz1) = pack(&p, "one", &["--gzip"]);
    let (g2, gz2) = pack(&p, "two", &["--gzip"]);
    assert_eq!(g1["sha1"], g2["sha1"]);
    assert_eq!(gz1, gz2, "gzip archives differ");
    assert_eq!(s1["files"], g1["files"]);
    assert_eq!(
        g1["sha1"].as_str().expect("sha1"),
        format!("{:x}", Sha1::digest(&gz1)),
        "printed sha1 is the sha1 of the file"
    );
    assert_eq!(g1["bytes"].as_u64(), Some(gz1.len() as u64));

    // The gzip stream is the tar stream, readable by gzip itself.
    let gunzip = Command::new("gzip")
        .args(["-dc"])
        .arg(g1["path"].as_str().expect("path"))
        .output()
        .expect("gzip -dc");
    assert!(gunzip.status.success());
    assert_eq!(gunzip.stdout, t1);

    // Headers carry no owners or times; modes, long names and links survive.
    let mut archive = tar::Archive::new(t1.as_slice());
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let h = entry.header();
        assert_eq!(h.uid().expect("uid"), 0);
        assert_eq!(h.gid().expect("gid"), 0);
        assert_eq!(h.mtime().expect("mtime"), 0);
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
    }
    let all = items(&t1);
    let find = |path: &str| {
        all.iter()
            .find(|i| i.path == path)
            .unwrap_or_else(|| panic!("{path} not in archive: {all:#?}"))
    };
    assert_eq!(find("bin/run.sh").mode, 0o755);
    assert_eq!(find("bin/long-link").kind, '2');
    assert_eq!(
        find("bin/long-link").link,
        format!("../{}", "y".repeat(150))
    );
    find(&format!("deep/{}/long-name.txt", "x".repeat(120)));
    assert_eq!(find("dir0").kind, '5');
    // Sorted: the file list in the archive is in byte order.
    let files: Vec<&str> = all
        .iter()
        .filter(|i| i.kind != '5')
        .map(|i| i.path.as_str())
        .collect();
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(files, sorted);
}

#[test]
fn hard_links_fifos_and_sockets() {
    let p = TestProject::new();
    let c = p.work().join("ctx");
    write(&c, "Dockerfile", "FROM scratch\n");
    write(&c, "b/original", "shared bytes");
    fs::hard_link(c.join("b/original"), c.join("a-link")).expect("hard link");
    let fifo = Command::new("mkfifo")
        .arg(c.join("pipe"))
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    let _listener = std::os::unix::net::UnixListener::bind(c.join("sock")).expect("bind socket");

    // A FIFO is never opened: if it were, this would hang.
    let out = p.root().join("special.tar");
    let r = p.kiln(&["context", "pack", "ctx", "-o", out.to_str().expect("utf-8")]);
    r.ok();
    assert!(
        r.stderr.contains("skipped socket sock"),
        "socket not named: {}",
        r.stderr
    );
    let all = items(&fs::read(&out).expect("archive"));
    let by_path = |p: &str| all.iter().find(|i| i.path == p).cloned();
    assert_eq!(by_path("pipe").expect("fifo sent").kind, '6');
    assert!(by_path("sock").is_none());
    // The first name in byte order carries the data; the next is a link to it.
    let first = by_path("a-link").expect("a-link");
    assert_eq!(first.kind, '0');
    assert_eq!(first.sha1, format!("{:x}", Sha1::digest(b"shared bytes")));
    let second = by_path("b/original").expect("b/original");
    assert_eq!((second.kind, second.link.as_str()), ('1', "a-link"));
}

#[test]
fn large_context_without_ignore_file_warns() {
    let p = TestProject::new();
    let c = p.work().join("ctx");
    write(&c, "Dockerfile", "FROM scratch\n");
    let big = fs::File::create(c.join("big.bin")).expect("create");
    big.set_len(51 * 1024 * 1024).expect("sparse file");
    let r = p.kiln(&["context", "ls", "ctx"]);
    r.ok();
    assert!(
        r.stderr.contains("51.0 MiB") && r.stderr.contains(".dockerignore"),
        "{}",
        r.stderr
    );
    write(&c, ".dockerignore", "nothing-matches\n");
    let r = p.kiln(&["context", "ls", "ctx"]);
    r.ok();
    assert!(!r.stderr.contains("MiB"), "{}", r.stderr);
}

#[test]
fn upload_is_content_addressed_and_skipped_when_present() {
    let p = TestProject::new();
    let c = p.work().join("ctx");
    write(&c, "Dockerfile", "FROM scratch\n");
    write(&c, "app.py", "print('hi')\n");
    let store = p.root().join("store");
    let url = format!("file://{}", store.display());
    let first = p
        .kiln(&["context", "upload", "ctx", "--store", &url, "--json"])
        .ok()
        .json();
    assert_eq!(first["skipped"], false);
    let sha = first["sha1"].as_str().expect("sha1").to_string();
    let stored = store.join(format!("kiln-build-contexts/{sha}.tar.gz"));
    assert_eq!(first["uri"], format!("file://{}", stored.display()));
    let bytes = fs::read(&stored).expect("stored archive");
    assert_eq!(format!("{:x}", Sha1::digest(&bytes)), sha);
    // The same as `pack --gzip`.
    let (packed, _) = pack(&p, "ctx", &["--gzip"]);
    assert_eq!(packed["sha1"], first["sha1"]);

    let again = p
        .kiln(&[
            "context",
            "upload",
            "ctx",
            "--store",
            store.to_str().expect("utf-8"),
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(again["skipped"], true);
    assert_eq!(again["sha1"], first["sha1"]);
    // Nothing but the archive in the store folder (no temporary files left).
    let names: Vec<_> = fs::read_dir(store.join("kiln-build-contexts"))
        .expect("store dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    write(&c, "app.py", "print('changed')\n");
    let changed = p
        .kiln(&["context", "upload", "ctx", "--store", &url, "--json"])
        .ok()
        .json();
    assert_eq!(changed["skipped"], false);
    assert_ne!(changed["sha1"], first["sha1"]);

    let r = p.kiln(&["context", "upload", "ctx", "--store", "s3://bucket/x"]);
    r.code(2);
    assert!(r.stderr.contains("s3://bucket/x"), "{}", r.stderr);
}

#[test]
fn the_builder_context_hook_adds_files_the_ignore_file_cannot_remove() {
    let p = TestProject::initialised();
    let plugins = p.plugins(&["good"]);
    let plugins = plugins.to_str().expect("utf-8");
    p.kiln(&[
        "--plugins-dir",
        plugins,
        "component",
        "register",
        "hooked",
        "--type",
        "image-builder",
        "--flavor",
        "echo",
        "--set",
        "prefix=hook:",
    ])
    .ok();
    let c = p.work().join("ctx");
    write(&c, "Dockerfile", "FROM scratch\n");
    write(&c, "notes.txt", "n");
    write(&c, ".dockerignore", "*.txt\n");
    assert_eq!(ls(&p, &["ctx"]), vec![".dockerignore", "Dockerfile"]);
    assert_eq!(
        ls(
            &p,
            &["--plugins-dir", plugins, "ctx", "--builder", "hooked"]
        ),
        vec![".dockerignore", "Dockerfile", "echo-context.txt"]
    );
    let (_, tar) = pack(
        &p,
        "ctx",
        &["--plugins-dir", plugins, "--builder", "hooked"],
    );
    let file = items(&tar)
        .into_iter()
        .find(|i| i.path == "echo-context.txt")
        .expect("hook file in archive");
    assert_eq!(
        file.sha1,
        format!("{:x}", Sha1::digest(b"hook:dockerfile=Dockerfile\n"))
    );

    // A hook file where the context has a directory: an error, no archive.
    fs::create_dir_all(c.join("echo-context.txt/inner")).expect("mkdir");
    write(&c, ".dockerignore", "");
    let r = p.kiln(&[
        "--plugins-dir",
        plugins,
        "context",
        "pack",
        "ctx",
        "-o",
        "hooked.tar",
        "--builder",
        "hooked",
    ]);
    r.code(2);
    assert!(r.stderr.contains("echo-context.txt"), "{}", r.stderr);
    let leftovers: Vec<_> = fs::read_dir(p.work())
        .expect("work dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".kiln-pack") || n.contains("hooked"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // Only image builders have a context hook.
    p.kiln(&[
        "--plugins-dir",
        plugins,
        "context",
        "ls",
        "ctx",
        "--builder",
        "nope",
    ])
    .code(2);
    let _ = fixture("good");
}

// ------------------------------------------------- against the Docker CLI

/// A small seeded generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NAMES: &[&str] = &[
    "a",
    "b",
    "ab",
    "a.txt",
    "a-b",
    "a b",
    "ünï",
    "x[1]",
    "q?",
    "star*",
    "#hash",
    "!bang",
    ".hidden",
    "node_modules",
    "keep.txt",
    "app.log",
    "keep.log",
    "data",
    "raw",
    "README.md",
    "sub",
    "deep",
    "z.tmp",
    "Dockerfile.dev",
    " lead",
    "trail ",
    "back\\slash",
    "a*b",
    "a|b",
    "aab",
    "{2}",
    "tab\tin",
];

const PATTERNS: &[&str] = &[
    "node_modules",
    "**/node_modules",
    "*.log",
    "!keep.log",
    "!**/keep.log",
    "a*",
    "**/*.tmp",
    "data/**",
    "!data/raw/README.md",
    "data",
    "!data/keep.txt",
    "[a-c]*",
    "?b",
    "sub",
    "!sub/deep/keep.txt",
    "**/.hidden",
    "!**/keep.txt",
    "# comment",
    "  spaced  ",
    "/ab",
    "./a.txt",
    "sub/../data",
    "*/keep.txt",
    "sub/*/a",
    "**",
    "!sub",
    "deep/**/x[1]",
    "*",
    "!a",
    "a/**",
    "**/a b",
    "ünï",
    "x\\[1\\]",
    "star\\*",
    "\\#hash",
    "!\\!bang",
    "*.md",
    "!README.md",
    "sub/deep",
    "**/deep/**",
    ".",
    "!.",
    "sub/deep/*",
    "q?",
    "a?b",
];

fn random_tree(rng: &mut Rng, root: &Path) {
    write(root, "Dockerfile", "FROM scratch\n");
    for i in 0..60 {
        let depth = 1 + rng.below(4);
        let parts: Vec<&str> = (0..depth).map(|_| rng.pick(NAMES)).collect();
        let rel = parts.join("/");
        let path = root.join(&rel);
        // Skip names that collide with a file or dir made earlier.
        let not_a_real_dir =
            |a: &Path| fs::symlink_metadata(a).is_ok_and(|m| !m.file_type().is_dir());
        if fs::symlink_metadata(&path).is_ok() || path.ancestors().skip(1).any(not_a_real_dir) {
            continue;
        }
        match rng.below(10) {
            0 => {
                fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                let target = match rng.below(3) {
                    0 => "a".to_string(),
                    1 => "../../outside".to_string(),
                    _ => rng.pick(NAMES).to_string(),
                };
                let _ = symlink(target, &path);
            }
            1 => fs::create_dir_all(&path).expect("empty dir"),
            _ => {
                write(root, &rel, &format!("{rel} {i}\n"));
                if rng.below(4) == 0 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
                }
            }
        }
    }
}

#[test]
fn contexts_match_the_docker_cli() {
    let Some(docker) = docker_cli() else {
        return;
    };
    let capture = Capture::start();
    let p = TestProject::new();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut compared = 0;
    for case in 0..6 {
        let dir = p.work().join(format!("tree{case}"));
        random_tree(&mut rng, &dir);
        for variant in 0..6 {
            let n = 1 + rng.below(8);
            let lines: Vec<&str> = (0..n).map(|_| rng.pick(PATTERNS)).collect();
            let ignore = lines.join("\n") + "\n";
            fs::write(dir.join(".dockerignore"), &ignore).expect("write ignore");
            let docker_items = {
                let mut v = items(&capture.context_of(&docker, &dir, &[]));
                v.sort();
                v
            };
            let rel = format!("tree{case}");
            let (_, tar) = pack(&p, &rel, &[]);
            let mut kiln_items = items(&tar);
            kiln_items.sort();
            assert_eq!(
                kiln_items, docker_items,
                "case {case}.{variant}: kiln and the Docker CLI differ for .dockerignore:\n{ignore}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 36);
}

/// Pieces of patterns: names, Go's glob syntax, escapes, and the regex
/// metacharacters Docker's matcher turns patterns into.
const PIECES: &[&str] = &[
    "a",
    "b",
    "ab",
    "x[1]",
    "q?",
    "star*",
    "ünï",
    "a b",
    "data",
    "sub",
    "deep",
    "keep.txt",
    "*",
    "**",
    "?",
    "[a-c]",
    "[!a]",
    "[^a]",
    "[]a]",
    "[a-]",
    "[\\]]",
    "\\*",
    "\\?",
    "\\[",
    "\\",
    "\\a",
    ".",
    "..",
    "^",
    "$",
    "+",
    "(",
    ")",
    "{",
    "}",
    "|",
    "\\d",
    "\\w",
    " ",
    "\t",
    "#",
    "!",
    "[",
    "]",
    "-",
    " lead",
    "trail ",
    "back\\slash",
    "\\ ",
    "{2}",
    "a{1,2}",
    "aab",
    "a|b",
];

/// A random pattern: maybe an exception, maybe anchored, one to three
/// segments of one to three pieces, maybe a trailing slash or spaces.
fn random_pattern(rng: &mut Rng) -> String {
    let mut p = String::new();
    match rng.below(6) {
        0 => p.push('!'),
        1 => p.push_str("  "),
        _ => {}
    }
    match rng.below(8) {
        0 => p.push('/'),
        1 => p.push_str("./"),
        _ => {}
    }
    let segments = 1 + rng.below(3);
    for s in 0..segments {
        if s > 0 {
            p.push('/');
        }
        for _ in 0..1 + rng.below(3) {
            p.push_str(rng.pick(PIECES));
        }
    }
    match rng.below(8) {
        0 => p.push('/'),
        1 => p.push_str("  "),
        _ => {}
    }
    p
}

/// Random metacharacter-heavy `.dockerignore` files against the Docker
/// CLI: the same files sent, or both refusing the file.
#[test]
fn metacharacter_patterns_match_the_docker_cli() {
    let Some(docker) = docker_cli() else {
        return;
    };
    let capture = Capture::start();
    let p = TestProject::new();
    let mut rng = Rng(0x5eed_7a11_c0de_0002);
    let (mut compared, mut refused) = (0, 0);
    for case in 0..4 {
        let dir = p.work().join(format!("meta{case}"));
        random_tree(&mut rng, &dir);
        for variant in 0..60 {
            let lines: Vec<String> = (0..1 + rng.below(4))
                .map(|_| random_pattern(&mut rng))
                .collect();
            let ignore = lines.join("\n") + "\n";
            fs::write(dir.join(".dockerignore"), &ignore).expect("write ignore");
            let docker = capture.try_context_of(&docker, &dir, &[]);
            let out = p.root().join(format!("meta-{case}-{variant}.tar"));
            let rel = format!("meta{case}");
            let r = p.kiln(&["context", "pack", &rel, "-o", out.to_str().expect("utf-8")]);
            match docker {
                Err(e) => {
                    assert_ne!(
                        r.code, 0,
                        "case {case}.{variant}: the Docker CLI refused ({e}), kiln packed:\n{ignore}"
                    );
                    refused += 1;
                }
                Ok(tar) => {
                    assert_eq!(
                        r.code, 0,
                        "case {case}.{variant}: kiln refused ({}), the Docker CLI packed:\n{ignore}",
                        r.stderr
                    );
                    let mut docker_items = items(&tar);
                    docker_items.sort();
                    let mut kiln_items = items(&fs::read(&out).expect("read archive"));
                    kiln_items.sort();
                    let only = |a: &[Item], b: &[Item]| -> Vec<String> {
                        a.iter()
                            .filter(|i| !b.contains(i))
                            .map(|i| i.path.clone())
                            .collect()
                    };
                    assert!(
                        kiln_items == docker_items,
                        "case {case}.{variant}: kiln and the Docker CLI differ for \
                         .dockerignore:\n{ignore}\nonly kiln sends: {:?}\nonly Docker sends: {:?}",
                        only(&kiln_items, &docker_items),
                        only(&docker_items, &kiln_items)
                    );
                }
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 240);
    // The generator makes both kinds of file.
    assert!(refused > 0 && refused < compared, "{refused} refused");
}

/// The surprising rules, each checked against the Docker CLI on one tree.
#[test]
fn dockers_surprising_rules_match_the_docker_cli() {
    let Some(docker) = docker_cli() else {
        return;
    };
    let capture = Capture::start();
    let p = TestProject::new();
    let dir = p.work().join("quirks");
    for rel in [
        "a/x",
        "a/y",
        "foo/bar",
        "foobar/baz",
        "data/raw/README.md",
        "data/raw/dump.bin",
        "data/models/m.bin",
        "keep/keep",
        "x/keep",
        "[^]",
        "]",
        "v7",
        "vd",
        "a^b",
        "README.md",
        "docs/README.md",
        "sub/Dockerfile.dev",
        "sub/other",
    ] {
        write(&dir, rel, rel);
    }
    write(&dir, "Dockerfile", "FROM scratch\n");
    let cases: &[(&str, &[&str])] = &[
        // Skipped patterns are not recorded for the children: `a/x` stays.
        ("a\n!a/x\na\n", &[]),
        // `foo/**` keeps the directory entry `foo`; `foo**` is a prefix test.
        ("foo/**\n", &[]),
        ("foo**\n", &[]),
        // Exceptions rescue inside an excluded directory only by text prefix.
        ("data\n!data/raw/README.md\n", &[]),
        ("data\n!*/raw/README.md\n", &[]),
        ("*\n!**/keep\n", &[]),
        ("*\n!*/keep\n", &[]),
        // Regex leftovers: `[*]`, `\d`, a bare `^`.
        ("[*]\n", &[]),
        ("v\\d\n", &[]),
        ("a^b\n", &[]),
        ("a^b*\n", &[]),
        // Last match wins.
        ("*.md\n!README.md\n**/README.md\n", &[]),
        // The Dockerfile named by -f is always sent, even from an excluded dir.
        ("sub\n", &["-f", "sub/Dockerfile.dev"]),
    ];
    for (ignore, args) in cases {
        fs::write(dir.join(".dockerignore"), ignore).expect("write ignore");
        let docker_args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with("sub/") {
                    dir.join(a).display().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let docker_args: Vec<&str> = docker_args.iter().map(String::as_str).collect();
        let mut docker_items = items(&capture.context_of(&docker, &dir, &docker_args));
        docker_items.sort();
        let kiln_args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with("sub/") {
                    format!("quirks/{a}")
                } else {
                    a.to_string()
                }
            })
            .collect();
        let kiln_args: Vec<&str> = kiln_args.iter().map(String::as_str).collect();
        let (_, tar) = pack(&p, "quirks", &kiln_args);
        let mut kiln_items = items(&tar);
        kiln_items.sort();
        assert_eq!(
            kiln_items, docker_items,
            "differ for .dockerignore:\n{ignore}"
        );
    }
}

/// A checkout cannot make kiln read a host file through a symlinked
/// Dockerfile or ignore file: a link that leads out of the context is
/// refused (exit 2) before anything is read or sent; one that stays inside
/// works, and a file outside named with `-f` is the user's own choice.
#[test]
fn a_dockerfile_or_ignore_file_linking_out_of_the_context_is_refused() {
    let p = TestProject::new();
    let host_file = p.root().join("host-secret");
    fs::write(&host_file, "HOST-SECRET-LINE\n").expect("write");
    let app = p.work().join("app");
    fs::create_dir_all(&app).expect("mkdir");
    symlink(&host_file, app.join("Dockerfile")).expect("symlink");
    let out = p.root().join("out.tar");
    let out_s = out.to_str().expect("utf8");
    let run = p.kiln(&["context", "pack", "app", "-o", out_s]);
    run.code(2);
    assert!(run.stderr.contains("outside the context"), "{}", run.stderr);
    assert!(!run.all_output().contains("HOST-SECRET-LINE"));
    assert!(!out.exists(), "nothing written");

    // The same through .dockerignore.
    fs::remove_file(app.join("Dockerfile")).expect("rm");
    fs::write(app.join("Dockerfile"), "FROM scratch\n").expect("write");
    symlink(&host_file, app.join(".dockerignore")).expect("symlink");
    p.kiln(&["context", "pack", "app", "-o", out_s]).code(2);

    // Links inside the context are fine; so is a Dockerfile named outside.
    fs::remove_file(app.join(".dockerignore")).expect("rm");
    fs::create_dir_all(app.join("docker")).expect("mkdir");
    fs::rename(app.join("Dockerfile"), app.join("docker/Dockerfile")).expect("mv");
    symlink("docker/Dockerfile", app.join("Dockerfile")).expect("symlink");
    p.kiln(&["context", "pack", "app", "-o", out_s]).ok();
    fs::write(&host_file, "FROM scratch\n").expect("write");
    p.kiln(&[
        "context",
        "ls",
        "app",
        "-f",
        host_file.to_str().expect("utf8"),
    ])
    .ok();
}

/// A full disk (a 1 MiB tmpfs) is exit 4 with the OS's words, whether kiln
/// writes the context archive or the `oci` builder writes `--output`, and
/// nothing half-written is left on it. Mounting needs root.
#[test]
fn a_full_disk_is_exit_4_and_leaves_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "mounting a small tmpfs needs root (CI=true)"
        );
        return;
    }
    let p = TestProject::new();
    let full = p.root().join("full");
    fs::create_dir_all(&full).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&full)
        .status()
        .expect("mount");
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(full.clone());
    let plugins = p.root().join("plugins");
    let oci = shipped_plugin("kiln-oci");
    fs::copy(&oci, plugins.join(oci.file_name().expect("name"))).expect("copy");
    let app = p.work().join("app");
    write(&app, "Dockerfile", "FROM scratch\nCOPY blob /\n");
    // 3 MB that do not compress.
    let mut blob = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(fs::File::open("/dev/urandom").expect("urandom"), 3_000_000),
        &mut blob,
    )
    .expect("read");
    fs::write(app.join("blob"), blob).expect("write");
    let run = p.kiln(&[
        "context",
        "pack",
        "app",
        "-o",
        full.join("c.tar").to_str().expect("utf8"),
    ]);
    run.code(4);
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    let run = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .args([
            "--output",
            &format!("type=oci,dest={}", full.join("i.tar").display()),
        ])
        .run();
    run.code(4);
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    let left: Vec<_> = fs::read_dir(&full)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left on the full disk: {left:?}");
    // A cache on the full disk does not fail a build: the layer is made in
    // the system's temp folder instead, and the image is written.
    let out = p.root().join("i.tar");
    let run = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .env("KILN_CACHE_DIR", &full)
        .args(["--output", &format!("type=oci,dest={}", out.display())])
        .run();
    run.ok();
    assert!(out.is_file(), "{}", run.stderr);
}
