//! The hostile-input corpus (issue 14): files a hostile or careless user hands to `validate` and
//! `run`. Each case is generated here (big files are sparse, so the corpus costs no disk), and
//! each run of the binary is held to a memory bound (its address space is limited with
//! `setrlimit(RLIMIT_AS)`, as `prlimit --as` does) and a time bound (a hang detector: the child
//! is killed and the case fails if it has not ended). Every case asserts the exit code, that the
//! message names the file and the field or limit, and that nothing was sent.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The address space a run of the binary may use: a normal validation needs less than half.
const MEMORY: u64 = 512 << 20;
/// Longer than any case takes on a loaded machine; a case still running then has hung.
const HANG: Duration = Duration::from_secs(60);

/// What a file of the corpus is.
enum Content {
    Text(String),
    Bytes(Vec<u8>),
    /// A sparse file of this length (reads as zeros), after `head`.
    Sparse(Vec<u8>, u64),
    Fifo,
    Dir,
    Link(&'static str),
}
use Content::*;

/// One case: the files, the arguments after the command, and what stderr must say.
struct Case {
    name: &'static str,
    files: Vec<(&'static str, Content)>,
    args: Vec<&'static str>,
    says: Vec<&'static str>,
    /// The exit code: 2 (bad input) unless said otherwise.
    code: i32,
}

impl Case {
    fn exits(self, code: i32) -> Case {
        Case { code, ..self }
    }
}

fn case(
    name: &'static str,
    files: Vec<(&'static str, Content)>,
    args: &[&'static str],
    says: &[&'static str],
) -> Case {
    Case {
        name,
        files,
        args: args.to_vec(),
        says: says.to_vec(),
        code: 2,
    }
}

fn make(dir: &Path, name: &str, content: &Content) {
    let path = dir.join(name);
    match content {
        Text(t) => std::fs::write(&path, t).unwrap(),
        Bytes(b) => std::fs::write(&path, b).unwrap(),
        Sparse(head, len) => {
            std::fs::write(&path, head).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(*len)
                .unwrap();
        }
        Fifo => assert!(
            Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap()
                .success()
        ),
        Dir => std::fs::create_dir(&path).unwrap(),
        Link(target) => std::os::unix::fs::symlink(dir.join(target), &path).unwrap(),
    }
}

/// Run the binary in `dir` under the memory bound, killed if it outlives [`HANG`].
fn bounded(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("hidream-batch"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("HIDREAM_API_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only setrlimit, which is async-signal-safe, is called.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: MEMORY,
                rlim_max: MEMORY,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(HANG) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the child's pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("`hidream-batch {}` hung (over {HANG:?})", args.join(" "));
        }
    }
}

fn check(case: &Case) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in &case.files {
        make(dir.path(), name, content);
    }
    let o = bounded(dir.path(), &case.args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(case.code),
        "{}: exit {:?} (a crash under the memory bound is a signal)\n{stderr}",
        case.name,
        o.status
    );
    for said in &case.says {
        assert!(
            stderr.contains(said),
            "{}: stderr lacks {said:?}:\n{stderr}",
            case.name
        );
    }
    assert!(
        stderr.to_lowercase().contains("nothing was sent"),
        "{}: {stderr}",
        case.name
    );
}

/// A PNG header of `width` × `height` (signature, IHDR), without the rest of the file.
fn png_head(width: u32, height: u32) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    b
}

fn model_csv(image: &str) -> Content {
    Text(format!("kind,image,prompt\nmodel,{image},a coat\n"))
}

fn yaml_job(extra: &str) -> String {
    format!("jobs:\n  - id: a\n    kind: txt2img\n    prompt: \"{{x}}\"\n{extra}")
}

/// The manifest side of the corpus: one case per hostile input of issue 14, and more.
#[test]
fn hostile_manifests_fail_cleanly_in_bounded_time_and_memory() {
    let laughs = {
        let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            t.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{}", i - 1); 10].join(", ")
            ));
        }
        t + "jobs: []\n"
    };
    let wide = {
        let list = (0..20_000)
            .map(|i| format!("v{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let uses: String = (1..20_000).map(|i| format!("      k{i}: *big\n")).collect();
        yaml_job(&format!("    matrix:\n      x: &big [{list}]\n{uses}"))
    };
    let huge_string = yaml_job(&format!(
        "    matrix:\n      x: [&s \"{}\", {}]\n",
        "y".repeat(1 << 20),
        vec!["*s"; 100].join(", ")
    ));
    let block = (0..200)
        .map(|i| format!("{}- \n", "  ".repeat(i)))
        .collect::<String>();
    let overflow = yaml_job(&format!(
        "    matrix:\n      x: [a, b]\n{}",
        (0..70)
            .map(|i| format!("      v{i}: [a, b]\n"))
            .collect::<String>()
    ));
    let many_jobs = format!("jobs:\n{}", "- {}\n".repeat(100_001));
    let multi = "jobs:\n  - {id: a, kind: txt2img, prompt: x, matrix: 5}\n  - {id: b, kind: txt2img, prompt: \"{nope}\"}\n  - {id: c, kind: txt2img, colour: red}\n  - {id: d, kind: weird, prompt: hi}\n";
    let inline = format!(
        "kind,image,prompt\nmodel,\"data:image/png;base64,{}\",a coat\n",
        "A".repeat(12 << 20)
    );
    let cases = vec![
        case(
            "billion laughs",
            vec![("m.yaml", Text(laughs))],
            &["validate", "m.yaml"],
            &["m.yaml", "aliases are used too many times", "Limits"],
        ),
        case(
            "a long list used by many aliases",
            vec![("m.yaml", Text(wide))],
            &["validate", "m.yaml"],
            &["m.yaml:", "more than 1000000 values", "matrix"],
        ),
        case(
            "a long string used by many aliases",
            vec![("m.yaml", Text(huge_string))],
            &["validate", "m.yaml"],
            &["m.yaml:", "more than 64 MiB of text"],
        ),
        case(
            "a 200 MB manifest",
            vec![("m.yaml", Sparse(b"jobs:\n".to_vec(), 200 << 20))],
            &["validate", "m.yaml"],
            &["m.yaml", "larger than 8 MiB", "Limits"],
        ),
        case(
            "a .csv that is a link to a device",
            vec![("zero.csv", Link("../../../../../../../../dev/zero"))],
            &["validate", "zero.csv"],
            &["zero.csv", "is a device, not a file"],
        ),
        case(
            "a matrix whose request count overflows 64 bits",
            vec![("m.yaml", Text(overflow))],
            &["validate", "m.yaml"],
            &["--max-requests", "more than 2^64 requests"],
        ),
        case(
            "200 KB of nested flow collections",
            vec![(
                "m.yaml",
                Text(format!(
                    "jobs: {}{}\n",
                    "[".repeat(100_000),
                    "]".repeat(100_000)
                )),
            )],
            &["validate", "m.yaml"],
            &["m.yaml:1:", "nested deeper than 32 levels"],
        ),
        case(
            "deeply nested block lists",
            vec![("m.yaml", Text(format!("jobs:\n{block}")))],
            &["validate", "m.yaml"],
            &["m.yaml:", "nested deeper than 32 levels"],
        ),
        case(
            "more jobs than a YAML manifest may hold",
            vec![("m.yaml", Text(many_jobs))],
            &["validate", "m.yaml"],
            &["m.yaml", "more than 100000 jobs"],
        ),
        case(
            "a YAML manifest that is not UTF-8",
            vec![(
                "m.yaml",
                Bytes(b"jobs:\n  - id: a\n    prompt: caf\xe9\n".to_vec()),
            )],
            &["validate", "m.yaml"],
            &["m.yaml", "line 3", "not valid UTF-8"],
        ),
        case(
            "an image path that is a FIFO",
            vec![("m.csv", model_csv("pipe.png")), ("pipe.png", Fifo)],
            &["validate", "m.csv"],
            &["m.csv", "field `image`", "named pipe"],
        ),
        case(
            "a for_each that is a folder",
            vec![
                ("m.yaml", Text(yaml_job("    for_each: rows\n"))),
                ("rows", Dir),
            ],
            &["validate", "m.yaml"],
            &["m.yaml", "for_each", "is a folder, not a file"],
        ),
        case(
            "a for_each that is a FIFO",
            vec![
                ("m.yaml", Text(yaml_job("    for_each: rows.csv\n"))),
                ("rows.csv", Fifo),
            ],
            &["validate", "m.yaml"],
            &["m.yaml", "for_each", "named pipe"],
        ),
        case(
            "a for_each that is a loop of links",
            vec![
                ("m.yaml", Text(yaml_job("    for_each: a.csv\n"))),
                ("a.csv", Link("b.csv")),
                ("b.csv", Link("a.csv")),
            ],
            &["validate", "m.yaml"],
            &["m.yaml", "for_each", "loop of symbolic links"],
        ),
        case(
            "a truncated PNG",
            vec![
                ("m.csv", model_csv("cut.png")),
                ("cut.png", Bytes(png_head(64, 64))),
            ],
            &["validate", "m.csv"],
            &["m.csv", "field `image`", "cut short"],
        ),
        case(
            "a 2 GB sparse file named .png",
            vec![
                ("m.csv", model_csv("big.png")),
                ("big.png", Sparse(png_head(64, 64), 2 << 30)),
            ],
            &["validate", "m.csv"],
            &["m.csv", "field `image`", "over the 64 MiB"],
        ),
        case(
            "a CSV manifest read through a pipe",
            vec![("m.csv", Fifo)],
            &["validate", "m.csv"],
            &["m.csv", "named pipe"],
        ),
        case(
            "standard input",
            vec![],
            &["validate", "-"],
            &["standard input (`-`)"],
        ),
        case(
            "a 2 GB CSV",
            vec![("m.csv", Sparse(b"kind,prompt\n".to_vec(), 2 << 30))],
            &["validate", "m.csv"],
            &["m.csv", "larger than 1 GiB"],
        ),
        case(
            "a CSV with too many columns",
            vec![(
                "m.csv",
                Text(
                    (0..1_001)
                        .map(|i| format!("meta.c{i}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            )],
            &["validate", "m.csv"],
            &["m.csv", "more than 1000 columns on line 1"],
        ),
        case(
            "a CSV row of 20 MB",
            vec![(
                "m.csv",
                Text(format!(
                    "kind,prompt\ntxt2img,\"{}\"\n",
                    "x".repeat(20 << 20)
                )),
            )],
            &["validate", "m.csv"],
            &["m.csv", "row larger than 16 MiB", "line 2"],
        ),
        case(
            "a text-to-image prompt of 2,001 characters",
            vec![(
                "m.csv",
                Text(format!("kind,prompt\ntxt2img,{}\n", "猫".repeat(2_001))),
            )],
            &["validate", "m.csv"],
            &[
                "m.csv",
                "line 2",
                "field `prompt`",
                "2001 characters",
                "at most 2000",
            ],
        ),
        case(
            "an inline image over 8 MiB",
            vec![("m.csv", Text(inline))],
            &["validate", "m.csv"],
            &["m.csv", "field `image`", "larger than 8 MiB"],
        ),
        case(
            "problems in several jobs, the first structural",
            vec![("m.yaml", Text(multi.into()))],
            &["validate", "m.yaml"],
            &[
                "m.yaml:2:",
                "job `a`, field `matrix`: invalid type",
                "job `b`, field `prompt`: placeholder `{nope}`",
                "job `c`: unknown field `colour`",
                "job `d`, field `kind`: unknown kind `weird`",
                "4 problems",
            ],
        ),
        case(
            "a write-ahead log that is not UTF-8",
            vec![
                ("m.yaml", Text(yaml_job("    matrix: {x: [a]}\n"))),
                ("r.csv.wal", Bytes(b"sent \xff\xfe\n".to_vec())),
            ],
            &["run", "m.yaml", "--simulate", "-o", "r.csv"],
            &["write-ahead log", "r.csv.wal", "line 1", "not UTF-8"],
        )
        .exits(3),
    ];
    for c in &cases {
        check(c);
    }
}

/// `run` refuses the same inputs before it sends anything: the simulator is never started.
#[test]
fn run_refuses_a_hostile_manifest_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        format!("jobs: {}{}\n", "{a: ".repeat(50_000), "}".repeat(50_000)),
    )
    .unwrap();
    let o = bounded(dir.path(), &["run", "m.yaml", "--simulate"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nested deeper than 32 levels"), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert!(
        !dir.path().join("results.csv").exists()
            && std::fs::read_dir(dir.path()).unwrap().count() == 1,
        "no results file was made"
    );
}
