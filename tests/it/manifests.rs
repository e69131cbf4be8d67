//! Manifests end to end: the invalid corpus (each file broken in one way) is refused with exit 2
//! and a message naming the file, the job or row, and the field; valid manifests expand to the
//! same requests, ids and bodies every time (snapshots); ids obey their properties.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hidream_batch::expand;
use hidream_batch::manifest;
use proptest::prelude::*;

use crate::common::{bin, root};

fn files(dir: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("fixture folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn relative(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

#[test]
fn every_invalid_manifest_is_refused_with_file_place_and_field() {
    let corpus = files("tests/fixtures/invalid");
    assert!(corpus.len() >= 25, "the corpus has {} files", corpus.len());
    for path in corpus {
        let rel = relative(&path);
        let out = bin().args(["validate", &rel]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{rel} must exit 2");
        assert!(out.stdout.is_empty(), "{rel}: nothing on stdout");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("error: {rel}")),
            "{rel}: {first}"
        );
        // Every message names where (a job, a row or a line and column; or, for a file-wide
        // setting such as `defaults` or the CSV header, the field alone) and what (a field), but a
        // YAML syntax error, which has only its position.
        let where_ = first.contains("job `")
            || first.contains(": line ")
            || first.contains(&format!("{rel}:"))
            || first.starts_with(&format!("error: {rel}, field `"));
        assert!(
            where_,
            "{rel}: the message names no job, row or line: {first}"
        );
        if !rel.contains("yaml-syntax")
            && !rel.contains("duplicate-requests")
            && !rel.contains("ragged-row")
        {
            assert!(
                first.contains("field `"),
                "{rel}: the message names no field: {first}"
            );
        }
        let name = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_");
        insta::assert_snapshot!(format!("invalid__{name}"), stderr);
    }
}

#[test]
fn examples_and_valid_fixtures_expand_to_stable_snapshots() {
    let mut all = files("tests/fixtures/valid");
    all.extend(files("manifests"));
    for path in all.into_iter().filter(|p| {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        (ext == "yaml" || ext == "csv") && !p.ends_with("products.csv")
    }) {
        let rel = relative(&path);
        let out = bin().args(["expand", &rel]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{rel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let again = bin().args(["expand", &rel]).output().unwrap();
        assert_eq!(
            stdout.as_bytes(),
            &again.stdout[..],
            "{rel}: expansion is deterministic"
        );
        let name = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_");
        insta::assert_snapshot!(format!("expand__{name}"), stdout);
        let v = bin().args(["validate", &rel]).output().unwrap();
        assert_eq!(v.status.code(), Some(0), "{rel} validates");
    }
}

#[test]
fn excel_export_reads_bom_crlf_quoted_newlines_and_chinese() {
    let out = bin()
        .args(["expand", "tests/fixtures/valid/excel-export.csv"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    // The BOM did not end up in the first column's name: `kind` was recognised on every row.
    assert_eq!(lines[0]["kind"], "txt2img");
    let prompts: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["body"]["prompt"].as_str())
        .collect();
    assert!(
        prompts
            .iter()
            .any(|p| p.contains('\n') && p.contains(',') && p.contains("\"morning\"")),
        "{prompts:?}"
    );
    assert!(
        prompts
            .iter()
            .any(|p| p.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))),
        "{prompts:?}"
    );
    assert!(
        lines.iter().all(|l| !l["body"].to_string().contains('\r')),
        "no CR leaks into values"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["meta"]["title"].as_str().is_some_and(|t| !t.is_ascii()))
    );
}

#[test]
fn max_requests_guard_states_the_count() {
    let out = bin()
        .args([
            "validate",
            "tests/fixtures/valid/matrix.yaml",
            "--max-requests",
            "10",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("expand to 24 requests, more than --max-requests 10"),
        "{stderr}"
    );
}

#[test]
fn validate_summarises_requests_images_and_time() {
    let out = bin()
        .args([
            "validate",
            "manifests/sweep.yaml",
            "manifests/lookbook.yaml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("total: 4 jobs, 21 requests"), "{stdout}");
    assert!(stdout.contains("txt2img: 11 requests, 20 images → https://www.hidreamai.com/api-pub/gw/v3/image/txt2img/async"), "{stdout}");
    assert!(
        stdout.contains(
            "model: 10 requests, 18 images → https://hidreamai.com/api-pub/ec/v3/image/model/async"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("a run takes under a minute"), "{stdout}");
}

#[test]
fn expand_shows_paths_and_full_shows_base64() {
    let out = bin()
        .args(["expand", "manifests/lookbook.yaml"])
        .output()
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let image = first["body"]["image"].as_str().unwrap();
    assert!(image.starts_with("images/"), "{image}");
    let full = bin()
        .args(["expand", "manifests/lookbook.yaml", "--full"])
        .output()
        .unwrap();
    let first_full: serde_json::Value = serde_json::from_str(
        String::from_utf8(full.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let data = first_full["body"]["image"].as_str().unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("bare base64, no data: prefix");
    assert_eq!(
        bytes,
        std::fs::read(root().join("manifests").join(image)).unwrap()
    );
    assert_eq!(
        first["request_id"], first_full["request_id"],
        "--full does not change ids"
    );
}

#[test]
fn run_id_and_any_change_change_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    let write = |prompt: &str| {
        let p = dir.path().join("m.yaml");
        std::fs::write(&p, format!("jobs:\n  - id: a\n    kind: txt2img\n    prompt: \"{prompt}\"\n  - id: b\n    kind: txt2img\n    prompt: same\n")).unwrap();
        p
    };
    let ids = |p: &Path, run_id: Option<&str>| -> Vec<uuid::Uuid> {
        let m = manifest::load(p, &Default::default()).unwrap();
        expand::expand(std::slice::from_ref(&m), run_id)
            .map(|r| r.unwrap().id)
            .collect()
    };
    let before = ids(&write("one"), None);
    let salted = ids(&write("one"), Some("2026-11-22"));
    let edited = ids(&write("two"), None);
    assert_ne!(before[0], salted[0]);
    assert_ne!(before[1], salted[1]);
    assert_ne!(before[0], edited[0], "editing job a changes its id");
    assert_eq!(before[1], edited[1], "job b is untouched, so is its id");
}

/// A generated sweep: a for_each table of `rows` rows, a matrix of the given sizes, `repeat`.
fn sweep(dir: &Path, rows: usize, sizes: &[usize], repeat: u32) -> PathBuf {
    let mut csv = String::from("col,note\n");
    for r in 0..rows {
        csv += &format!("row{r},same note\n");
    }
    std::fs::write(dir.join("rows.csv"), csv).unwrap();
    let mut yaml = String::from(
        "name: prop\njobs:\n  - id: sweep\n    kind: txt2img\n    for_each: rows.csv\n    matrix:\n",
    );
    let mut prompt = String::from("p {col}");
    for (k, n) in sizes.iter().enumerate() {
        let values: Vec<String> = (0..*n).map(|i| format!("v{k}_{i}")).collect();
        yaml += &format!("      k{k}: [{}]\n", values.join(", "));
        prompt += &format!(" {{k{k}}}");
    }
    yaml += &format!("    prompt: \"{prompt}\"\n    repeat: {repeat}\n");
    let path = dir.join("prop.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn ids_are_unique_stable_and_counted(rows in 1usize..5, sizes in prop::collection::vec(1usize..5, 0..4), repeat in 1u32..4) {
        let dir = tempfile::tempdir().unwrap();
        let path = sweep(dir.path(), rows, &sizes, repeat);
        let m = manifest::load(&path, &Default::default()).unwrap();
        let first: Vec<uuid::Uuid> = expand::expand(std::slice::from_ref(&m), None).map(|r| r.unwrap().id).collect();
        let expected = rows * sizes.iter().product::<usize>() * repeat as usize;
        prop_assert_eq!(first.len(), expected);
        prop_assert_eq!(expand::count(&m).unwrap(), expected as u64);
        let unique: HashSet<_> = first.iter().collect();
        prop_assert_eq!(unique.len(), first.len());
        // Re-expansion from a fresh load (as another run or machine would) gives the same ids;
        // so does a copy of the manifest under another name, in another folder.
        let again = manifest::load(&path, &Default::default()).unwrap();
        let second: Vec<uuid::Uuid> = expand::expand(std::slice::from_ref(&again), None).map(|r| r.unwrap().id).collect();
        prop_assert_eq!(&first, &second);
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join("rows.csv"), elsewhere.path().join("rows.csv")).unwrap();
        let copy = elsewhere.path().join("prop (1).yaml");
        std::fs::write(&copy, std::fs::read_to_string(&path).unwrap().replace("name: prop", "name: renamed")).unwrap();
        let moved = manifest::load(&copy, &Default::default()).unwrap();
        let third: Vec<uuid::Uuid> = expand::expand(std::slice::from_ref(&moved), None).map(|r| r.unwrap().id).collect();
        prop_assert_eq!(first, third);
    }
}

/// A `--base-url` with a user or password is refused (exit 2) by every command that takes one,
/// and the password is shown nowhere.
#[test]
fn a_base_url_with_credentials_is_refused_and_never_shown() {
    for command in ["expand", "run"] {
        let out = bin()
            .args([
                command,
                "manifests/sweep.yaml",
                "--base-url",
                "http://user:hunter2@127.0.0.1:9",
            ])
            .args(if command == "expand" {
                &[][..]
            } else {
                &["--dry-run", "-o", "never-written.csv"][..]
            })
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("user or password"), "{command}: {stderr}");
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "{command}: {stdout}{stderr}"
        );
    }
}

/// Every path is checked for what it is before it is read: a pipe, a device, a folder and a loop
/// of links each get their own message (exit 2, at once: a pipe nobody writes to does not hang).
#[test]
fn paths_that_are_not_files_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("pipe.png");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink("/dev/zero", d.join("zero.csv")).unwrap();
    std::fs::create_dir(d.join("folder.csv")).unwrap();
    std::os::unix::fs::symlink(d.join("b.yaml"), d.join("a.yaml")).unwrap();
    std::os::unix::fs::symlink(d.join("a.yaml"), d.join("b.yaml")).unwrap();
    std::fs::write(
        d.join("image-pipe.yaml"),
        "name: p\njobs:\n  - id: shirt\n    kind: model\n    image: pipe.png\n    prompt: \"a model\"\n",
    )
    .unwrap();
    for (file, says) in [
        ("image-pipe.yaml", "is a named pipe (FIFO), not a file"),
        ("zero.csv", "is a device, not a file"),
        ("folder.csv", "is a folder, not a file"),
        ("a.yaml", "is a loop of symbolic links, not a file"),
    ] {
        let out = bin()
            .args(["validate"])
            .arg(d.join(file))
            .timeout(std::time::Duration::from_secs(10))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(stderr.contains(says), "{file}: {stderr}");
    }
}

/// Terminal escape sequences in a manifest never reach the terminal raw: not in `validate`'s
/// summary, not in an error.
#[test]
fn escape_sequences_in_a_manifest_are_shown_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("named.yaml");
    std::fs::write(
        &named,
        "name: \"evil\\e[2J\"\njobs:\n  - id: a\n    kind: txt2img\n    prompt: \"x\"\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "kind,prompt,resolution\ntxt2img,x,\"1024\x1b[2J\"\n").unwrap();
    for path in [named, bad] {
        let out = bin().arg("validate").arg(&path).output().unwrap();
        let all = [out.stdout, out.stderr].concat();
        assert!(
            !all.contains(&0x1b),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&all)
        );
        assert!(
            String::from_utf8_lossy(&all).contains("\\u{1b}[2J"),
            "{}",
            path.display()
        );
    }
}

/// A local image is checked whole enough to trust, without decoding it: a PNG, JPEG or WebP cut
/// short (a partial copy) is refused, and so is a file over the byte bound (a 2 GB file with a
/// PNG's first bytes), each with exit 2 naming the file.
#[test]
fn images_cut_short_or_too_large_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut jobs = String::from("name: images\njobs:\n");
    let mut cases = Vec::new();
    for name in ["shirt-01.png", "jacket-03.jpg", "skirt-05.webp"] {
        let bytes = std::fs::read(root().join("manifests/images").join(name)).unwrap();
        let cut = format!("cut-{name}");
        std::fs::write(d.join(&cut), &bytes[..bytes.len() * 2 / 3]).unwrap();
        cases.push((cut, "is cut short"));
    }
    let png = std::fs::read(root().join("manifests/images/shirt-01.png")).unwrap();
    let huge = std::fs::File::create(d.join("huge.png")).unwrap();
    std::io::Write::write_all(&mut &huge, &png[..64]).unwrap();
    huge.set_len(2 << 30).unwrap();
    cases.push(("huge.png".to_string(), "over the 64 MiB"));
    for (i, (file, _)) in cases.iter().enumerate() {
        jobs += &format!(
            "  - id: j{i}\n    kind: model\n    image: {file}\n    prompt: \"a model wearing this\"\n"
        );
    }
    let manifest = d.join("m.yaml");
    std::fs::write(&manifest, jobs).unwrap();
    let out = bin()
        .arg("validate")
        .arg(&manifest)
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for (file, says) in &cases {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(file.as_str()) && l.contains(says)),
            "{file}: {stderr}"
        );
    }
}

/// A matrix whose request count overflows 64 bits (16 variables of 16 values: exactly 2^64, which
/// a wrapping product makes 0) is the `--max-requests` error, at once.
#[test]
fn a_matrix_that_overflows_is_the_max_requests_error() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    let keys: String = (0..16)
        .map(|k| format!("      k{k}: [{}]\n", values.join(", ")))
        .collect();
    let manifest = dir.path().join("m.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: o\njobs:\n  - id: s\n    kind: txt2img\n    prompt: \"x {{k0}}\"\n    matrix:\n{keys}"
        ),
    )
    .unwrap();
    let out = bin()
        .arg("validate")
        .arg(&manifest)
        .timeout(std::time::Duration::from_secs(10))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("more than 2^64 requests, more than --max-requests"),
        "{stderr}"
    );
}
