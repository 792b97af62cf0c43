//! Graphs described in TOML (`percept run graph.toml`), checked before anything starts.
//!
//! ```toml
//! [[stage]]
//! name = "lines"
//! kind = "text"        # the rest of the table is the stage's parameters
//! path = "input.txt"
//!
//! [[stage]]
//! name = "out"
//! kind = "stdout"
//!
//! [[edge]]
//! from = "lines.text"  # stage.port
//! to = "out.in"
//! capacity = 16        # default 8
//! policy = "block"     # or "latest"; default block
//! ```
//!
//! Every mistake is reported with its line: an unknown kind or port, a missing parameter,
//! ports of different types joined, an input fed twice or not at all, a cycle.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use toml::Spanned;

use crate::edge::{EdgeConfig, Policy};

/// The type of what travels through a port; only equal types may be joined, except that
/// an input of type [`ANY`] (a sink that prints anything) takes every type.
pub type PortType = &'static str;
pub const ANY: PortType = "any";

/// What the runtime knows about a kind of stage.
#[derive(Debug, Clone)]
pub struct KindInfo {
    pub inputs: Vec<(&'static str, PortType)>,
    pub outputs: Vec<(&'static str, PortType)>,
    pub required: Vec<&'static str>,
}

/// A mistake in a graph file, with the line it is on (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct SpecError {
    pub line: usize,
    pub reason: String,
}

/// A checked graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSpec {
    pub stages: Vec<StageSpec>,
    pub edges: Vec<EdgeSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageSpec {
    pub name: String,
    pub kind: String,
    pub params: toml::Table,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSpec {
    pub from: (String, String),
    pub to: (String, String),
    pub config: EdgeConfig,
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    stage: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    edge: Vec<Spanned<RawEdge>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    from: String,
    to: String,
    #[serde(default = "default_capacity")]
    capacity: usize,
    #[serde(default = "default_policy")]
    policy: Policy,
}

/// The deepest edge a graph file may ask for (crossbeam allocates a bounded channel's
/// slots when it is made: 10^12 of them aborts the process, usize::MAX panics).
pub const MAX_CAPACITY: usize = 65_536;

fn default_capacity() -> usize {
    8
}

fn default_policy() -> Policy {
    Policy::Block
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses and checks a graph file against the known kinds.
pub fn parse(text: &str, kinds: &BTreeMap<&str, KindInfo>) -> Result<GraphSpec, SpecError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| SpecError {
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        reason: e.message().trim().to_string(),
    })?;
    let err = |offset: usize, reason: String| SpecError {
        line: line_of(text, offset),
        reason,
    };

    let mut stages = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for table in &raw.stage {
        let at = table.span().start;
        let mut params = table.get_ref().clone();
        let field = |params: &mut toml::Table, key: &str| match params.remove(key) {
            Some(toml::Value::String(s)) => Ok(s),
            Some(_) => Err(err(at, format!("stage field '{key}' must be a string"))),
            None => Err(err(at, format!("stage has no '{key}'"))),
        };
        let name = field(&mut params, "name")?;
        let kind = field(&mut params, "kind")?;
        let Some(info) = kinds.get(kind.as_str()) else {
            let known: Vec<&str> = kinds.keys().copied().collect();
            return Err(err(
                at,
                format!(
                    "stage '{name}': unknown kind '{kind}' (known: {})",
                    known.join(", ")
                ),
            ));
        };
        if let Some(missing) = info.required.iter().find(|p| !params.contains_key(**p)) {
            return Err(err(
                at,
                format!("stage '{name}' ({kind}): missing parameter '{missing}'"),
            ));
        }
        if by_name.insert(name.clone(), stages.len()).is_some() {
            return Err(err(at, format!("two stages are named '{name}'")));
        }
        stages.push(StageSpec {
            name,
            kind,
            params,
            line: line_of(text, at),
        });
    }

    let mut edges = Vec::new();
    let mut fed: HashMap<(String, String), usize> = HashMap::new();
    for spanned in &raw.edge {
        let at = spanned.span().start;
        let e = spanned.get_ref();
        if e.capacity == 0 {
            return Err(err(at, "edge capacity must be at least 1".into()));
        }
        if e.capacity > MAX_CAPACITY {
            return Err(err(
                at,
                format!(
                    "edge capacity {} is more than {MAX_CAPACITY}: an edge allocates its \
                     queue up front, and a deeper one only adds latency",
                    e.capacity
                ),
            ));
        }
        let port = |end: &str, outputs: bool| -> Result<((String, String), PortType), SpecError> {
            let (stage, port) = end.split_once('.').ok_or_else(|| {
                err(
                    at,
                    format!("edge end '{end}' is not of the form stage.port"),
                )
            })?;
            let Some(&i) = by_name.get(stage) else {
                return Err(err(
                    at,
                    format!("edge end '{end}': no stage named '{stage}'"),
                ));
            };
            let info = &kinds[stages[i].kind.as_str()];
            let (ports, what) = if outputs {
                (&info.outputs, "output")
            } else {
                (&info.inputs, "input")
            };
            let Some(&(_, ty)) = ports.iter().find(|(p, _)| *p == port) else {
                let names: Vec<&str> = ports.iter().map(|(p, _)| *p).collect();
                let list = if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                };
                return Err(err(
                    at,
                    format!(
                        "edge end '{end}': stage '{stage}' ({}) has no {what} port '{port}' ({what}s: {list})",
                        stages[i].kind
                    ),
                ));
            };
            Ok(((stage.to_string(), port.to_string()), ty))
        };
        let (from, from_ty) = port(&e.from, true)?;
        let (to, to_ty) = port(&e.to, false)?;
        if from_ty != to_ty && to_ty != ANY {
            return Err(err(
                at,
                format!(
                    "edge {} -> {}: a '{from_ty}' output cannot feed a '{to_ty}' input",
                    e.from, e.to
                ),
            ));
        }
        if let Some(first) = fed.insert(to.clone(), line_of(text, at)) {
            return Err(err(
                at,
                format!(
                    "input '{}' is already fed by the edge on line {first}",
                    e.to
                ),
            ));
        }
        edges.push(EdgeSpec {
            from,
            to,
            config: EdgeConfig {
                capacity: e.capacity,
                policy: e.policy,
            },
            line: line_of(text, at),
        });
    }
    for stage in &stages {
        for (port, _) in &kinds[stage.kind.as_str()].inputs {
            if !fed.contains_key(&(stage.name.clone(), port.to_string())) {
                return Err(SpecError {
                    line: stage.line,
                    reason: format!("input '{}.{port}' is not fed by any edge", stage.name),
                });
            }
        }
    }
    let spec = GraphSpec { stages, edges };
    check_acyclic(&spec)?;
    Ok(spec)
}

/// Refuses a cycle, naming the stages on it (data would circulate and never end).
fn check_acyclic(spec: &GraphSpec) -> Result<(), SpecError> {
    let index: HashMap<&str, usize> = spec
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut next: Vec<Vec<(usize, usize)>> = vec![Vec::new(); spec.stages.len()];
    for e in &spec.edges {
        next[index[e.from.0.as_str()]].push((index[e.to.0.as_str()], e.line));
    }
    // Depth-first search; state 1 = on the current path, 2 = done.
    fn visit(
        v: usize,
        next: &[Vec<(usize, usize)>],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<(Vec<usize>, usize)> {
        state[v] = 1;
        path.push(v);
        for &(w, line) in &next[v] {
            if state[w] == 1 {
                let start = path.iter().position(|&p| p == w).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(w);
                return Some((cycle, line));
            }
            if state[w] == 0
                && let Some(found) = visit(w, next, state, path)
            {
                return Some(found);
            }
        }
        path.pop();
        state[v] = 2;
        None
    }
    let mut state = vec![0u8; spec.stages.len()];
    for v in 0..spec.stages.len() {
        if state[v] == 0
            && let Some((cycle, line)) = visit(v, &next, &mut state, &mut Vec::new())
        {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&i| spec.stages[i].name.as_str())
                .collect();
            return Err(SpecError {
                line,
                reason: format!("the edges form a cycle: {}", names.join(" -> ")),
            });
        }
    }
    Ok(())
}
