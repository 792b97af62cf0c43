//! `--mqtt` against a real broker: Debian's mosquitto on a free loopback port, stopped in
//! the middle of a run and started again.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{free_port, lines_of, wait_for_line, wait_for_port};
use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/describe");
const FRAMES: usize = 24;

/// The bundled photos replayed one a second, FRAMES of them: long enough for the broker
/// to go away and come back while frames keep coming.
fn long_fixture(dir: &std::path::Path) {
    let src = std::path::Path::new(FIXTURE);
    std::fs::create_dir_all(dir.join("camera")).unwrap();
    let index = std::fs::read_to_string(src.join("camera.jsonl")).unwrap();
    let photos: Vec<Value> = index
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for p in &photos {
        let file = p["file"].as_str().unwrap();
        std::fs::copy(src.join(file), dir.join(file)).unwrap();
    }
    let mut lines = String::new();
    for i in 0..FRAMES {
        let mut p = photos[i % photos.len()].clone();
        p["seq"] = i.into();
        p["t_ms"] = (i as f64 * 1000.0).into();
        lines.push_str(&format!("{p}\n"));
    }
    std::fs::write(dir.join("camera.jsonl"), lines).unwrap();
    std::fs::copy(src.join("manifest.json"), dir.join("manifest.json")).unwrap();
}

/// mosquitto with `args`, once it listens on `port`.
fn broker_with(port: u16, args: &[&std::ffi::OsStr]) -> Child {
    // Debian puts it in /usr/sbin, which is not on every user's PATH.
    let sbin = std::path::Path::new("/usr/sbin/mosquitto");
    let program = if sbin.is_file() {
        sbin
    } else {
        std::path::Path::new("mosquitto")
    };
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto runs (scripts/setup installs it)");
    wait_for_port(port, "mosquitto", Duration::from_secs(10));
    // Something else listening on the port would pass the wait while mosquitto exits for
    // want of it.
    std::thread::sleep(Duration::from_millis(200));
    if let Ok(Some(status)) = child.try_wait() {
        panic!("mosquitto on port {port} exited ({status}): was the port taken?");
    }
    child
}

/// mosquitto on `port` with its default configuration (loopback, anonymous).
fn broker(port: u16) -> Child {
    let port_arg = port.to_string();
    broker_with(port, &["-p".as_ref(), port_arg.as_ref()])
}

/// `mosquitto_sub -v` on everything percept and Home Assistant discovery use: lines of
/// "topic payload".
fn subscriber(port: u16) -> (Child, Receiver<String>) {
    let mut child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v"])
        .args(["-t", "percept/#", "-t", "homeassistant/#"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub runs (scripts/setup installs mosquitto-clients)");
    let lines = lines_of(child.stdout.take().unwrap());
    (child, lines)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A message's topic and JSON payload, when it is on `topic`.
fn on(line: &str, topic: &str) -> Option<Value> {
    let (t, payload) = line.split_once(' ')?;
    (t == topic)
        .then(|| serde_json::from_str(payload).ok())
        .flatten()
}

fn caption_seq(line: &str) -> Option<u64> {
    let v = on(line, "percept/testcam/caption")?;
    assert!(v["caption"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
    assert!(v["objects"].is_array() && v["labels"].is_array(), "{v}");
    v["seq"].as_u64()
}

fn check_discovery(lines: &[String]) {
    let caption = lines
        .iter()
        .find_map(|l| on(l, "homeassistant/sensor/percept_testcam/caption/config"))
        .unwrap_or_else(|| panic!("no caption sensor announced: {lines:#?}"));
    assert_eq!(caption["state_topic"], "percept/testcam/caption");
    assert_eq!(caption["availability_topic"], "percept/testcam/status");
    assert_eq!(caption["device"]["identifiers"][0], "percept_testcam");
    let person = lines
        .iter()
        .find_map(|l| {
            on(
                l,
                "homeassistant/binary_sensor/percept_testcam/person/config",
            )
        })
        .unwrap_or_else(|| panic!("no person sensor announced: {lines:#?}"));
    assert_eq!(person["state_topic"], "percept/testcam/person");
    assert_eq!(person["device_class"], "occupancy");
    assert!(
        lines.iter().any(|l| l == "percept/testcam/status online"),
        "{lines:#?}"
    );
}

#[test]
fn captions_and_discovery_reach_a_broker_that_goes_away_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    long_fixture(dir.path());
    let port = free_port();
    let first = broker(port);
    let (sub, messages) = subscriber(port);
    let mut percept = Command::new(env!("CARGO_BIN_EXE_percept"))
        .args([
            "describe",
            "--json",
            "--threads",
            "2",
            "--max-interval",
            "0",
            "--replay",
        ])
        .arg(dir.path())
        .args([
            "--mqtt",
            &format!("mqtt://127.0.0.1:{port}"),
            "--mqtt-device",
            "testcam",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let captions = lines_of(percept.stdout.take().unwrap());
    let stderr = lines_of(percept.stderr.take().unwrap());

    // Discovery, then captions, while the broker is up.
    let mut got = Vec::new();
    let before = wait_for_line(&messages, &mut got, Duration::from_secs(180), caption_seq)
        .unwrap_or_else(|| panic!("no caption published: {got:#?}"));
    check_discovery(&got);
    assert!(
        got.iter()
            .any(|l| l.starts_with("percept/testcam/detections {")),
        "{got:#?}"
    );

    // The broker goes away: frames are still described.
    let seq_of = |l: &String| serde_json::from_str::<Value>(l).ok()?["seq"].as_u64();
    let last_printed = captions
        .try_iter()
        .filter_map(|l| seq_of(&l))
        .max()
        .unwrap_or(0);
    stop(first);
    stop(sub);
    let mut printed = Vec::new();
    let down = Instant::now();
    let during = wait_for_line(&captions, &mut printed, Duration::from_secs(30), |l| {
        (seq_of(&l.to_owned())? > last_printed).then_some(())
    });
    assert!(
        during.is_some(),
        "no caption while the broker was down: {printed:#?}"
    );
    std::thread::sleep(Duration::from_secs(2).saturating_sub(down.elapsed()));

    // It comes back (nothing retained: it kept nothing): percept reconnects on its own and
    // announces itself again.
    let second = broker(port);
    let (sub, messages) = subscriber(port);
    let mut again = Vec::new();
    let after = wait_for_line(&messages, &mut again, Duration::from_secs(30), |l| {
        caption_seq(l).filter(|&s| s > before)
    });
    assert!(
        after.is_some(),
        "no caption after the broker came back: {again:#?}"
    );
    check_discovery(&again);

    let status = percept.wait().unwrap();
    let err: Vec<String> = stderr.try_iter().collect();
    assert!(status.success(), "percept: {status}\n{}", err.join("\n"));
    assert!(
        err.iter()
            .any(|l| l.contains("connected to") && l.contains("again")),
        "{err:#?}"
    );
    stop(sub);
    stop(second);
}

/// A CA, and a certificate for 127.0.0.1 that it signed, made with the openssl command.
fn certificates(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=percept test CA",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

fn tls_graph(dir: &std::path::Path, port: u16, ca: Option<&str>) -> std::path::PathBuf {
    std::fs::write(dir.join("lines.txt"), "first line\nsecond line\n").unwrap();
    let ca = ca
        .map(|c| format!("ca_file = \"{c}\"\n"))
        .unwrap_or_default();
    let graph = format!(
        "[[stage]]\nname = \"lines\"\nkind = \"text\"\npath = \"lines.txt\"\n\n\
         [[stage]]\nname = \"broker\"\nkind = \"mqtt\"\nurl = \"mqtts://127.0.0.1:{port}\"\n\
         device = \"tlstest\"\n{ca}\n\
         [[edge]]\nfrom = \"lines.text\"\nto = \"broker.in\"\n"
    );
    let path = dir.join(if ca.is_empty() {
        "no-ca.toml"
    } else {
        "tls.toml"
    });
    std::fs::write(&path, graph).unwrap();
    path
}

#[test]
fn lines_reach_a_tls_broker_whose_certificate_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let port = free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n\
         allow_anonymous true\n# Run as root, keep reading the test's files.\nuser root\n",
        d.display()
    );
    let conf_path = d.join("mosquitto.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let broker = broker_with(port, &["-c".as_ref(), conf_path.as_os_str()]);
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-v",
            "-t",
            "percept/#",
            "--cafile",
        ])
        .arg(d.join("ca.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let messages = lines_of(sub.stdout.take().unwrap());

    let run = |graph: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_percept"))
            .arg("run")
            .arg(graph)
            .output()
            .unwrap()
    };
    let ca = d.join("ca.pem");
    let out = run(&tls_graph(d, port, Some(ca.to_str().unwrap())));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = Vec::new();
    let first = wait_for_line(&messages, &mut got, Duration::from_secs(20), |l| {
        on(l, "percept/tlstest/text").filter(|v| v["text"] == "first line")
    });
    assert!(first.is_some(), "nothing over TLS: {got:#?}");
    let second = wait_for_line(&messages, &mut got, Duration::from_secs(20), |l| {
        on(l, "percept/tlstest/text").filter(|v| v["text"] == "second line")
    });
    assert!(second.is_some(), "the second line did not follow: {got:#?}");
    assert!(
        got.iter().any(|l| l == "percept/tlstest/status online"),
        "{got:#?}"
    );

    // Without the CA the broker's certificate is not trusted: no connection, nothing sent,
    // and the run still ends in order.
    let out = run(&tls_graph(d, port, None));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("no broker at 127.0.0.1:"), "{err}");
    let mut later = Vec::new();
    let again = wait_for_line(&messages, &mut later, Duration::from_secs(2), |l| {
        on(l, "percept/tlstest/text")
    });
    assert!(again.is_none(), "sent to an unverified broker: {later:#?}");
    stop(sub);
    stop(broker);
}
