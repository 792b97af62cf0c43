//! The live page (`--serve`) in a real browser: Debian's chromium, headless, driven through
//! chromedriver (WebDriver), on `percept describe` replaying the bundled fixture; and the
//! page's token and loopback rules, through plain HTTP.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{free_port, http, interrupt, lines_of, wait_for_line, wait_for_port};
use serde_json::{Value, json};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/describe");

/// The widths of the fixture's four photos.
const WIDTHS: [u64; 4] = [451, 445, 600, 640];

fn percept(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_percept"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("percept starts")
}

/// The page's address, from what percept prints on stderr.
fn served_url(stderr: &Receiver<String>, seen: &mut Vec<String>) -> String {
    wait_for_line(stderr, seen, Duration::from_secs(180), |l| {
        l.split_once("serving the live page on ")
            .map(|(_, url)| url.trim().to_owned())
    })
    .unwrap_or_else(|| panic!("no address printed; stderr:\n{}", seen.join("\n")))
}

fn port_of(url: &str) -> u16 {
    url.trim_start_matches("http://")
        .split(['/', '?'])
        .next()
        .and_then(|hp| hp.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// A WebDriver session in headless chromium.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/setup installs chromium-driver)");
        wait_for_port(port, "chromedriver", Duration::from_secs(30));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            },
        }}});
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
        };
        let v = browser.call("POST", "/session", &caps);
        browser.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        browser
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, reply) = http(self.port, method, path, &[], &body);
        let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }

    fn session(&self, method: &str, what: &str, body: &Value) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        self.call(method, &path, body)["value"].take()
    }

    fn script(&self, js: &str) -> Value {
        self.session("POST", "execute/sync", &json!({"script": js, "args": []}))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                "",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What the page shows: its caption texts and the frame image's natural width.
const LOOK: &str = "return {
    captions: Array.from(document.querySelectorAll('#history li[data-kind=caption] .text'))
        .map(e => e.textContent),
    frame: document.getElementById('frame').naturalWidth,
    stages: document.querySelectorAll('#stages tbody tr').length,
    link: document.getElementById('link').textContent,
};";

#[test]
fn the_live_page_shows_captions_and_the_frame_in_a_real_browser() {
    let mut child = percept(&[
        "describe",
        "--replay",
        FIXTURE,
        "--json",
        "--threads",
        "2",
        "--serve",
        "127.0.0.1:0",
    ]);
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    let mut err_lines = Vec::new();
    let url = served_url(&stderr, &mut err_lines);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let browser = Browser::start();
    browser.session("POST", "url", &json!({"url": url}));
    let until = Instant::now() + Duration::from_secs(120);
    let shown = loop {
        let v = browser.script(LOOK);
        let ready = v["captions"].as_array().is_some_and(|c| !c.is_empty())
            && v["frame"].as_u64().unwrap_or(0) > 0
            && v["stages"].as_u64().unwrap_or(0) > 0;
        if ready {
            break v;
        }
        assert!(
            Instant::now() < until,
            "the page never showed a caption and a frame: {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let png = common::base64_decode(
        browser
            .session("GET", "screenshot", &Value::Null)
            .as_str()
            .unwrap(),
    );
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {}", shot.display());

    // Every caption on the page is one percept printed.
    let printed: Vec<String> = stdout
        .try_iter()
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .filter_map(|v| v["caption"].as_str().map(str::to_owned))
        .collect();
    for c in shown["captions"].as_array().unwrap() {
        assert!(
            printed.iter().any(|p| p == c.as_str().unwrap()),
            "page caption {c} not among the printed ones {printed:?}"
        );
    }
    let width = shown["frame"].as_u64().unwrap();
    assert!(
        WIDTHS.contains(&width),
        "the frame's width {width} is no fixture photo's"
    );
    assert_eq!(shown["link"], "live", "{shown}");
    drop(browser);

    interrupt(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "percept after Ctrl-C: {status}");
}

/// A graph that replays the fixture's frames to a web stage: no models, quick to start.
fn web_graph(dir: &std::path::Path, web: &str) -> std::path::PathBuf {
    let graph = format!(
        "[[stage]]\nname = \"replay\"\nkind = \"replay\"\ndir = \"{FIXTURE}\"\n\n\
         [[stage]]\nname = \"page\"\nkind = \"web\"\n{web}\n\n\
         [[edge]]\nfrom = \"replay.frame\"\nto = \"page.in\"\n"
    );
    let path = dir.join("graph.toml");
    std::fs::write(&path, graph).unwrap();
    path
}

#[test]
fn the_token_guards_the_page_and_a_public_address_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let graph = web_graph(
        dir.path(),
        "addr = \"127.0.0.1:0\"\ntoken = \"s3cret-token\"",
    );
    let mut child = percept(&["run", graph.to_str().unwrap()]);
    let stderr = lines_of(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let url = served_url(&stderr, &mut seen);
    assert!(url.ends_with("/?token=s3cret-token"), "{url}");
    let port = port_of(&url);
    for path in ["/", "/api/state", "/api/frame.jpg", "/api/events"] {
        assert_eq!(
            http(port, "GET", path, &[], "").0,
            401,
            "{path} without the token"
        );
        let wrong = format!("{path}?token=s3cret-tokeN");
        assert_eq!(http(port, "GET", &wrong, &[], "").0, 401, "{wrong}");
    }
    let (status, body) = http(port, "GET", "/api/state?token=s3cret-token", &[], "");
    assert_eq!(status, 200);
    let state: Value = serde_json::from_slice(&body).unwrap();
    assert!(state["metrics"]["stages"].is_array(), "{state}");
    let bearer = [("Authorization", "Bearer s3cret-token")];
    assert_eq!(http(port, "GET", "/api/metrics", &bearer, "").0, 200);
    // The frame endpoint gives a JPEG once the first frame is through.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, jpeg) = http(port, "GET", "/api/frame.jpg", &bearer, "");
        if status == 200 {
            assert_eq!(&jpeg[..2], b"\xff\xd8", "a JPEG");
            break;
        }
        assert!(Instant::now() < until, "no frame served");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();

    // Off loopback, no token: refused before anything starts, saying what to do.
    let public = web_graph(dir.path(), "addr = \"0.0.0.0:0\"");
    let graph_args = ["run", public.to_str().unwrap()];
    for args in [&graph_args[..], &["describe", "--serve", "0.0.0.0:0"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_percept"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains("not a loopback address") && err.contains("--serve-token"),
            "{args:?}: {err}"
        );
    }
}
