//! `templates`, `--check-templates` and the simulator's template lists, over loopback: every page
//! of a list is read and each output format parses back; a typo'd id in a YAML job and in a CSV
//! row is found before anything is sent (exit 2); the lists are cached (the server sees no second
//! list query) and `--refresh-templates` reads them again; lists that cannot be read fail closed
//! (exit 3, nothing sent); paging that never ends is cut off; the gallery's files all exist.

use std::path::{Path, PathBuf};

use hidream_batch::sim::{SimConfig, Stats};

use crate::common::*;

/// A scratch folder: a cache folder (`cache/`) for `HIDREAM_BATCH_CACHE_DIR`, and a garment photo.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            root().join("manifests/images/shirt-01.png"),
            dir.path().join("shirt.png"),
        )
        .unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![(
            hidream_batch::env_vars::CACHE_DIR,
            self.path("cache").display().to_string(),
        )]
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn templates(scratch: &Scratch, base: &str, args: &[&str]) -> std::process::Output {
    let mut a: Vec<String> = vec!["templates".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    a.extend(["--base-url".into(), base.into()]);
    run_bin(a, scratch.env()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_read_and_every_format_parses_back() {
    let sim = simulator(quiet()).await;
    let base = sim.base_url();
    let s = Scratch::new();

    // 48 humans at 10 a page: five pages, each asked once.
    let o = templates(
        &s,
        &base,
        &["human", "--page-size", "10", "--format", "json"],
    )
    .await;
    exits(&o, 0);
    let json: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json.len(), 48);
    let ids: std::collections::BTreeSet<&str> =
        json.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 48, "each template once");
    assert!(ids.contains("h-101") && ids.contains("h-224"));
    assert_eq!(json[0]["name_zh"], "艾娃");
    assert_eq!(
        json[0]["age_range"], "18-25",
        "fields the docs do not name are kept"
    );
    assert_eq!(sim.stats().calls.templates_human, 5);

    let o = templates(&s, &base, &["scene", "--page-size", "7", "--format", "csv"]).await;
    exits(&o, 0);
    let text = stdout(&o);
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header[..6],
        [
            "id",
            "name_en",
            "name_zh",
            "scenes_type",
            "region",
            "show_image"
        ]
    );
    assert!(header.contains(&"sort".to_string()));
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 30);
    assert_eq!(&rows[0][0], "s-street");
    assert_eq!(&rows[15][3], "indoor scenes");
    assert_eq!(sim.stats().calls.templates_scene, 5, "30 at 7 a page");

    let o = templates(&s, &base, &["scene"]).await;
    exits(&o, 0);
    let table = stdout(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 31);
    assert!(lines[0].starts_with("id ") && lines[0].contains("scenes_type"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("s-studio ") && l.contains("摄影棚"))
    );
    assert_eq!(sim.stats().calls.templates_scene, 6, "one page of 100");
}

/// The simulator's template list pages as documented, and refuses bad paging like any field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_pages_its_lists_as_documented() {
    let sim = simulator(quiet()).await;
    let client = reqwest::Client::new();
    let get = |query: &str| {
        client
            .get(format!(
                "{}/api-pub/ec/v3/template/model/human{query}",
                sim.base_url()
            ))
            .bearer_auth(TOKEN)
            .send()
    };
    let page: serde_json::Value = get("").await.unwrap().json().await.unwrap();
    assert_eq!(page["code"], 0);
    assert_eq!(page["result"]["total_page"], 3, "48 at the default 20");
    assert_eq!(page["result"]["templates"].as_array().unwrap().len(), 20);
    for bad in [
        "?page_size=101",
        "?page_size=0",
        "?page_index=0",
        "?page_size=x",
    ] {
        let r: serde_json::Value = get(bad).await.unwrap().json().await.unwrap();
        assert_eq!(r["code"], 1001, "{bad}");
    }
    let unauthenticated = client
        .get(format!(
            "{}/api-pub/ec/v3/template/model/scene",
            sim.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let cover = client
        .get(format!(
            "{}/sim/templates/s-park.png?width=64",
            sim.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(cover.status(), 200);
    let png = cover.bytes().await.unwrap();
    let size = imagesize::blob_size(&png).unwrap();
    assert_eq!((size.width, size.height), (64, 85));
}

/// A YAML job, a CSV row: one typo'd id each, one name instead of an id, one valid request.
fn manifests(s: &Scratch) -> (PathBuf, PathBuf) {
    let yaml = s.write(
        "look.yaml",
        "name: look\njobs:\n  - id: street\n    kind: model\n    image: shirt.png\n    template: { human_template_id: \"{h}\", scene_template_id: s-street }\n    matrix: { h: [h-101, h-1O2] }\n",
    );
    let csv = s.write(
        "rows.csv",
        "id,kind,image,human_template_id,scene_template_id\nok,model,shirt.png,h-201,s-park\nnamed,model,shirt.png,Mia,s-stret\n",
    );
    (yaml, csv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_templates_finds_typos_in_yaml_and_csv_and_sends_nothing() {
    let sim = simulator(quiet()).await;
    let base = sim.base_url();
    let s = Scratch::new();
    let (yaml, csv) = manifests(&s);
    let files = [yaml.display().to_string(), csv.display().to_string()];

    let mut args: Vec<String> = vec!["validate".into()];
    args.extend(files.iter().cloned());
    args.extend([
        "--check-templates".into(),
        "--base-url".into(),
        base.clone(),
    ]);
    let o = run_bin(args, s.env()).await;
    exits(&o, 2);
    let err = stderr(&o);
    let line = |needle: &str| {
        err.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{err}"))
            .to_string()
    };
    let l = line("`h-1O2`");
    assert!(
        l.contains("look.yaml: job `street`")
            && l.contains("field `template.human_template_id`")
            && l.contains("did you mean `h-102`?"),
        "{l}"
    );
    let l = line("`Mia`");
    assert!(
        l.contains("rows.csv: line 3 (job `named`)")
            && l.contains("field `human_template_id`")
            && l.contains("did you mean `h-102`?")
            && l.contains("names are not resolved"),
        "{l}"
    );
    let l = line("`s-stret`");
    assert!(
        l.contains("field `scene_template_id`") && l.contains("did you mean `s-street`?"),
        "{l}"
    );
    assert!(err.contains("3 problems in the manifests"), "{err}");
    assert!(!err.contains("h-101`") && !err.contains("`h-201`"), "{err}");

    // `run` stops the same way, before anything is sent.
    let out = s.path("r.csv");
    let mut args = run_args(&csv, &base, &out, &["--check-templates"]);
    args.insert(2, yaml.display().to_string());
    let o = run_bin(args, s.env()).await;
    exits(&o, 2);
    assert!(stderr(&o).contains("did you mean `s-street`?"));
    let stats = sim.stats();
    assert_eq!(stats.submitted, 0, "nothing was sent");
    assert!(!out.exists(), "no results were written");
    // The second command used the lists the first cached: one page of each, once.
    assert_eq!(
        (stats.calls.templates_human, stats.calls.templates_scene),
        (1, 1)
    );
}

fn calls(stats: &Stats) -> (u64, u64) {
    (stats.calls.templates_human, stats.calls.templates_scene)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lists_are_cached_per_server_and_refreshed_on_demand() {
    let sim = simulator(SimConfig {
        strict_templates: true,
        ..quiet()
    })
    .await;
    let other = simulator(quiet()).await;
    let s = Scratch::new();
    let good = s.write(
        "good.csv",
        "kind,image,human_template_id,scene_template_id\nmodel,shirt.png,h-101,s-street\n",
    );
    let validate = |base: String, extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "validate".into(),
            good.display().to_string(),
            "--check-templates".into(),
            "--base-url".into(),
            base,
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        run_bin(a, s.env())
    };
    let o = validate(sim.base_url(), &[]).await;
    exits(&o, 0);
    assert!(
        stdout(&o).contains("template ids: 1 human, 1 scene, all listed by the API"),
        "{}",
        stdout(&o)
    );
    assert_eq!(calls(&sim.stats()), (1, 1));
    exits(&validate(sim.base_url(), &[]).await, 0);
    assert_eq!(
        calls(&sim.stats()),
        (1, 1),
        "the second check read the cache"
    );
    exits(&validate(sim.base_url(), &["--refresh-templates"]).await, 0);
    assert_eq!(
        calls(&sim.stats()),
        (2, 2),
        "--refresh-templates reads again"
    );
    // Another server has its own cache entry.
    exits(&validate(other.base_url(), &[]).await, 0);
    assert_eq!(calls(&other.stats()), (1, 1));
    let cached: Vec<String> = std::fs::read_dir(s.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.len(), 4, "{cached:?}");
    for f in &cached {
        let text = std::fs::read_to_string(s.path("cache").join(f)).unwrap();
        assert!(!text.contains(TOKEN), "the token is never cached");
    }

    // A run with the check submits, and the strict simulator takes the ids it lists.
    let out = s.path("r.csv");
    let o = run_bin(
        run_args(&good, &sim.base_url(), &out, &["--check-templates"]),
        s.env(),
    )
    .await;
    exits(&o, 0);
    assert_eq!(calls(&sim.stats()), (2, 2), "the run read the cache");
    assert_eq!(sim.stats().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strict_simulator_refuses_unknown_template_ids() {
    let sim = simulator(SimConfig {
        strict_templates: true,
        ..quiet()
    })
    .await;
    let s = Scratch::new();
    let bad = s.write(
        "bad.csv",
        "kind,image,human_template_id,scene_template_id\nmodel,shirt.png,h-999,s-street\n",
    );
    let out = s.path("r.csv");
    let o = run_bin(run_args(&bad, &sim.base_url(), &out, &[]), s.env()).await;
    exits(&o, 1);
    let rows = results(&out);
    assert_eq!(rows[0]["status"], "rejected");
    assert_eq!(rows[0]["code"], "1007");
    assert!(rows[0]["message"].contains("h-999"), "{:?}", rows[0]);
    let stats = sim.stats();
    assert_eq!(stats.rejected_by_reason["template.human_template_id"], 1);
}

/// A server whose template lists answer `status` (with a body) to every page.
async fn list_server(status: u16, body: serde_json::Value) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(wiremock::ResponseTemplate::new(status).set_body_json(body))
        .mount(&server)
        .await;
    accept_posts(&server).await;
    server
}

async fn accept_posts(server: &wiremock::MockServer) {
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "code": 0, "message": "Success", "result": {"task_id": "t", "sub_task_ids": ["t-0"]}
            })),
        )
        .mount(server)
        .await;
}

/// Lists that cannot be read stop `run --check-templates` with exit 3 before anything is sent,
/// whatever the reason; paging that never ends is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_that_cannot_be_read_fail_closed() {
    let s = Scratch::new();
    let good = s.write(
        "good.csv",
        "kind,image,human_template_id,scene_template_id\nmodel,shirt.png,h-101,s-street\n",
    );
    let page = |total_page: u64| {
        serde_json::json!({"code": 0, "message": "Success", "result": {
            "templates": [{"id": "h-101"}, {"id": "s-street"}], "total_count": 2, "total_page": total_page
        }})
    };
    let cases = [
        (
            500,
            serde_json::json!({"code": 5000, "message": "down"}),
            "(after 2 attempts)",
        ),
        (
            401,
            serde_json::json!({"code": 4001, "message": "bad token"}),
            "refused the credentials",
        ),
        (
            200,
            serde_json::json!({"code": 1999, "message": "no access"}),
            "code 1999: no access",
        ),
        (
            200,
            serde_json::json!({"code": 0, "result": {"templates": "none"}}),
            "is not a list",
        ),
        (200, page(5), "page 2 lists only templates of earlier pages"),
        (200, page(100_000), "more than the 100 hidream-batch reads"),
    ];
    for (status, body, why) in cases {
        let server = list_server(status, body).await;
        let out = s.path("r.csv");
        let o = run_bin(
            run_args(
                &good,
                &server.uri(),
                &out,
                &["--check-templates", "--max-attempts", "2"],
            ),
            s.env(),
        )
        .await;
        exits(&o, 3);
        let err = stderr(&o);
        assert!(
            err.contains("template list") && err.contains(why),
            "{why}: {err}"
        );
        assert!(!err.contains(TOKEN));
        assert!(submissions(&server).await.is_empty(), "{why}: nothing sent");
    }
    // Pages of one list each: both lists read whole, and the run goes on.
    let server = list_server(200, page(1)).await;
    let o = run_bin(
        run_args(
            &good,
            &server.uri(),
            &s.path("ok.csv"),
            &["--check-templates"],
        ),
        s.env(),
    )
    .await;
    exits(&o, 0);
}

/// Every file the page refers to by a relative path exists under `dir`.
pub fn referenced_files_exist(dir: &Path, html: &str) -> usize {
    let mut n = 0;
    for attr in ["src=\"", "href=\""] {
        for piece in html.split(attr).skip(1) {
            let value = &piece[..piece.find('"').unwrap()];
            if value.starts_with('#') || value.contains("://") {
                continue;
            }
            let path = dir.join(value.replace("&amp;", "&"));
            assert!(
                path.is_file(),
                "{} is referenced but missing",
                path.display()
            );
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gallery_is_self_contained_and_fetches_each_cover_once() {
    let sim = simulator(quiet()).await;
    let s = Scratch::new();
    let dir = s.path("gallery");
    let gallery = dir.display().to_string();
    let o = templates(&s, &sim.base_url(), &["scene", "--gallery", &gallery]).await;
    exits(&o, 0);
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert_eq!(html.matches("<figure class=\"tile template\"").count(), 30);
    assert!(
        html.contains("data-group=\"outdoor scenes\"")
            && html.contains("data-group=\"indoor scenes\"")
    );
    assert!(html.contains("<code class=\"id\" data-field=\"id\">s-street</code>"));
    assert!(!html.contains("<script"), "no script");
    assert_eq!(
        referenced_files_exist(&dir, &html),
        60,
        "a link and an image per cover"
    );
    let png = std::fs::read(dir.join("covers/s-street.png")).unwrap();
    assert_eq!(imagesize::blob_size(&png).unwrap().width, 512, "?width=512");
    assert_eq!(sim.stats().calls.template_covers, 30);
    // Again: the covers are there; none is fetched again.
    let o = templates(&s, &sim.base_url(), &["scene", "--gallery", &gallery]).await;
    exits(&o, 0);
    assert_eq!(sim.stats().calls.template_covers, 30);
}

/// The contact sheet of a model job: each row shows its garment photo (copied next to the page),
/// and the template ids are labelled with their names (from the lists `--check-templates`
/// cached; `collect` alone asks for none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_sheet_shows_garment_photos_and_template_names() {
    let sim = simulator(SimConfig {
        task_time: std::time::Duration::from_millis(50),
        ..quiet()
    })
    .await;
    let s = Scratch::new();
    let manifest = root().join("manifests/lookbook.yaml");
    let (out, dir) = (s.path("r.csv"), s.path("sheet"));
    let mut args = run_args(&manifest, &sim.base_url(), &out, &["--check-templates"]);
    args.extend(["--collect".into(), dir.display().to_string()]);
    let o = run_bin(args, s.env()).await;
    exits(&o, 0);
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    referenced_files_exist(&dir, &html);
    let inputs = std::fs::read_dir(dir.join("inputs")).unwrap().count();
    assert_eq!(
        inputs, 5,
        "four products and the portrait's jacket, each copied once"
    );
    // The lookbook's rows each share a photo: it is in the row's header, once.
    assert_eq!(html.matches("<th scope=\"row\"").count(), 4);
    assert_eq!(
        html.matches("<figure class=\"tile input\"").count(),
        5,
        "four row headers and the portrait strip's one photo (its two repeats share it)"
    );
    assert!(
        html.contains(
            "<span class=\"k\">scene</span> <code class=\"id\">s-street</code> City street"
        )
    );
    assert!(html.contains("<code class=\"id\">h-101</code> Ava"));
    assert!(html.contains("<code class=\"id\">h-205</code> Omar"));
    // The grid's columns are the human templates: their headers name them too.
    assert!(
        html.contains("<th scope=\"col\" data-col=\"h-205\">h-205 <span class=\"template-name\">Omar</span></th>"),
        "{html}"
    );
    let lists_read = calls(&sim.stats());

    // `collect` alone, elsewhere: the photos are found with --input-dir, the names in the cache.
    let again = s.path("again");
    let collect = |extra: Vec<String>| {
        let mut a: Vec<String> = vec![
            "collect".into(),
            "--base-url".into(),
            sim.base_url(),
            "--results".into(),
            out.display().to_string(),
            "--out".into(),
            again.display().to_string(),
        ];
        a.extend(extra);
        run_bin(a, s.env())
    };
    exits(&collect(vec![]).await, 0);
    let html = std::fs::read_to_string(again.join("index.html")).unwrap();
    assert!(html.contains("not found"), "without the manifest's folder");
    assert!(html.contains("<code class=\"id\">h-205</code> Omar"));
    let o = collect(vec![
        "--input-dir".into(),
        root().join("manifests").display().to_string(),
    ])
    .await;
    exits(&o, 0);
    let html = std::fs::read_to_string(again.join("index.html")).unwrap();
    assert!(!html.contains("not found"));
    assert!(referenced_files_exist(&again, &html) > 40);
    assert_eq!(calls(&sim.stats()), lists_read, "collect read no list");
}
