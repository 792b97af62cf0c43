//! Graph files: a good one parses, and each kind of mistake is refused with its line.

use std::collections::BTreeMap;

use pipeline::Policy;
use pipeline::spec::{KindInfo, SpecError, parse};

fn kinds() -> BTreeMap<&'static str, KindInfo> {
    let mut k = BTreeMap::new();
    k.insert(
        "text",
        KindInfo {
            inputs: vec![],
            outputs: vec![("text", "text")],
            required: vec!["path"],
        },
    );
    k.insert(
        "camera",
        KindInfo {
            inputs: vec![],
            outputs: vec![("frame", "frame")],
            required: vec![],
        },
    );
    k.insert(
        "upper",
        KindInfo {
            inputs: vec![("in", "text")],
            outputs: vec![("out", "text")],
            required: vec![],
        },
    );
    k.insert(
        "stdout",
        KindInfo {
            inputs: vec![("in", "text")],
            outputs: vec![],
            required: vec![],
        },
    );
    k
}

const GOOD: &str = r#"
[[stage]]
name = "lines"
kind = "text"
path = "in.txt"

[[stage]]
name = "up"
kind = "upper"

[[stage]]
name = "out"
kind = "stdout"

[[edge]]
from = "lines.text"
to = "up.in"

[[edge]]
from = "up.out"
to = "out.in"
capacity = 2
policy = "latest"
"#;

fn refuse(text: &str) -> SpecError {
    parse(text, &kinds()).unwrap_err()
}

#[test]
fn a_good_graph_parses_with_defaults() {
    let g = parse(GOOD, &kinds()).unwrap();
    assert_eq!(g.stages.len(), 3);
    assert_eq!(g.stages[0].params["path"].as_str(), Some("in.txt"));
    assert_eq!(g.edges[0].config.capacity, 8);
    assert_eq!(g.edges[0].config.policy, Policy::Block);
    assert_eq!(
        (g.edges[1].config.capacity, g.edges[1].config.policy),
        (2, Policy::Latest)
    );
    assert_eq!(g.edges[1].line, 19);
}

#[test]
fn unknown_kind() {
    let e = refuse(&GOOD.replace("kind = \"upper\"", "kind = \"uppr\""));
    assert_eq!(e.line, 7);
    assert!(
        e.reason.contains("unknown kind 'uppr'")
            && e.reason.contains("known: camera, stdout, text, upper"),
        "{e}"
    );
}

#[test]
fn unknown_port() {
    let e = refuse(&GOOD.replace("to = \"out.in\"", "to = \"out.input\""));
    assert_eq!(e.line, 19);
    assert!(
        e.reason.contains("has no input port 'input' (inputs: in)"),
        "{e}"
    );
    let e = refuse(&GOOD.replace("to = \"out.in\"", "to = \"nowhere.in\""));
    assert!(e.reason.contains("no stage named 'nowhere'"), "{e}");
}

#[test]
fn type_mismatch() {
    let text = r#"
[[stage]]
name = "cam"
kind = "camera"

[[stage]]
name = "out"
kind = "stdout"

[[edge]]
from = "cam.frame"
to = "out.in"
"#;
    let e = refuse(text);
    assert_eq!(e.line, 10);
    assert_eq!(
        e.reason,
        "edge cam.frame -> out.in: a 'frame' output cannot feed a 'text' input"
    );
}

#[test]
fn cycle() {
    let text = r#"
[[stage]]
name = "a"
kind = "upper"

[[stage]]
name = "b"
kind = "upper"

[[edge]]
from = "a.out"
to = "b.in"

[[edge]]
from = "b.out"
to = "a.in"
"#;
    let e = refuse(text);
    assert_eq!(e.line, 14);
    assert_eq!(e.reason, "the edges form a cycle: a -> b -> a");
}

#[test]
fn missing_parameter() {
    let e = refuse(&GOOD.replace("path = \"in.txt\"\n", ""));
    assert_eq!(e.line, 2);
    assert_eq!(e.reason, "stage 'lines' (text): missing parameter 'path'");
}

#[test]
fn other_mistakes_are_named() {
    let e = refuse(&GOOD.replace("policy = \"latest\"", "policy = \"newest\""));
    assert_eq!(e.line, 23);
    assert!(e.reason.contains("newest"), "{e}");
    let e = refuse(&GOOD.replace("capacity = 2", "capacity = 0"));
    assert!(e.reason.contains("capacity must be at least 1"), "{e}");
    // Issue 15: these panicked ("capacity is too large") and aborted on allocation.
    for huge in ["9223372036854775807", "1000000000000", "65537"] {
        let e = refuse(&GOOD.replace("capacity = 2", &format!("capacity = {huge}")));
        assert!(e.reason.contains("is more than 65536"), "{huge}: {e}");
    }
    let e = refuse(&GOOD.replace("name = \"up\"", "name = \"lines\""));
    assert!(e.reason.contains("two stages are named 'lines'"), "{e}");
    let e = refuse(&format!(
        "{GOOD}\n[[edge]]\nfrom = \"lines.text\"\nto = \"out.in\"\n"
    ));
    assert!(
        e.reason.contains("already fed by the edge on line 19"),
        "{e}"
    );
    let e = refuse(&GOOD.replace(
        "[[edge]]\nfrom = \"up.out\"\nto = \"out.in\"",
        "[[edge]]\nfrom = \"up.out\"\nto = \"up.in\"",
    ));
    assert!(e.reason.contains("already fed"), "{e}");
    let e = refuse("[[stage]]\nname = \"out\"\nkind = \"stdout\"\n");
    assert_eq!(
        e,
        SpecError {
            line: 1,
            reason: "input 'out.in' is not fed by any edge".into()
        }
    );
    let e = refuse("[[stage]\nname = 1");
    assert_eq!(e.line, 1);
}
