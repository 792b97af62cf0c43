//! Kiosk commands: the `[commands]` table of a knowledge file, the JSON that names one of
//! them, and the grammar that makes the language model produce only valid actions
//! ([`ActionGrammar`]). Whether an utterance asks for one is `super::routing`'s decision.
//!
//! ```toml
//! [commands.show_map]
//! description = "Show a map of one floor on the screen"
//! parameters = { floor = { enum = ["ground", "first", "second"] } }
//! ```
//!
//! An action is written in one canonical form, parameters in name order:
//! `{"action": "show_map", "args": {"floor": "first"}}`. Parameters are `enum` (one of the
//! listed strings), `string` (up to 48 bytes, no quotes or escapes) or `integer`.

use std::collections::BTreeMap;

use llm::grammar::Grammar;
use llm::{Llm, LlmError, Segment, Session, TokenId};
use serde::{Deserialize, Serialize};

pub use super::knowledge::{CommandSpec, ParamSpec, ParamType};

/// Longest free string argument, in bytes.
const MAX_TEXT: u16 = 48;
/// Longest integer argument, in digits.
const MAX_DIGITS: u16 = 9;

/// One action the model chose, as printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub action: String,
    pub args: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("command '{0}': names must be 1 to 64 letters, digits or _")]
    Name(String),
    #[error("command '{command}', parameter '{param}': {reason}")]
    Param {
        command: String,
        param: String,
        reason: String,
    },
    #[error("the model's output is not a valid action ({reason}): {text}")]
    Invalid { text: String, reason: String },
}

/// The commands of a knowledge file, checked, with their grammar.
#[derive(Debug, Clone)]
pub struct Commands {
    pub specs: BTreeMap<String, CommandSpec>,
    patterns: Vec<Vec<Piece>>,
}

/// One part of an action's canonical text.
#[derive(Debug, Clone)]
enum Piece {
    Literal(Vec<u8>),
    /// One of several literals (an enum's quoted values).
    OneOf(Vec<Vec<u8>>),
    /// A JSON string's body and its closing quote.
    Text,
    Integer,
}

fn plain_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A value that needs no escaping inside a JSON string.
fn plain_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

impl Commands {
    pub fn new(specs: BTreeMap<String, CommandSpec>) -> Result<Self, CommandError> {
        let mut patterns = Vec::new();
        for (name, spec) in &specs {
            if !plain_name(name) {
                return Err(CommandError::Name(name.clone()));
            }
            patterns.push(Self::pattern(name, spec)?);
        }
        Ok(Commands { specs, patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    fn pattern(name: &str, spec: &CommandSpec) -> Result<Vec<Piece>, CommandError> {
        let mut pieces = vec![Piece::Literal(
            format!("{{\"action\": \"{name}\", \"args\": {{").into_bytes(),
        )];
        for (k, (param, p)) in spec.parameters.iter().enumerate() {
            let fail = |reason: &str| CommandError::Param {
                command: name.into(),
                param: param.clone(),
                reason: reason.into(),
            };
            if !plain_name(param) {
                return Err(fail("names must be 1 to 64 letters, digits or _"));
            }
            let sep = if k == 0 { "" } else { ", " };
            let quote = if p.kind == ParamType::Integer || !p.choices.is_empty() {
                ""
            } else {
                "\""
            };
            pieces.push(Piece::Literal(
                format!("{sep}\"{param}\": {quote}").into_bytes(),
            ));
            if !p.choices.is_empty() {
                if p.kind == ParamType::Integer {
                    return Err(fail("an enum lists strings; drop type = \"integer\""));
                }
                if let Some(bad) = p.choices.iter().find(|c| !plain_value(c)) {
                    return Err(fail(&format!(
                        "enum value {bad:?} must be 1 to 64 bytes without quotes, backslashes or control characters"
                    )));
                }
                let alts = p
                    .choices
                    .iter()
                    .map(|c| format!("\"{c}\"").into_bytes())
                    .collect();
                pieces.push(Piece::OneOf(alts));
            } else if p.kind == ParamType::Integer {
                pieces.push(Piece::Integer);
            } else {
                pieces.push(Piece::Text);
            }
        }
        pieces.push(Piece::Literal(b"}}".to_vec()));
        Ok(pieces)
    }

    /// How the model is told about the commands, one line each:
    /// `show_map(floor: "ground" | "first" | "second"): Show a map of one floor`.
    pub fn describe(&self) -> String {
        self.specs
            .iter()
            .map(|(name, spec)| {
                let params: Vec<String> = spec
                    .parameters
                    .iter()
                    .map(|(param, p)| {
                        let kind = if !p.choices.is_empty() {
                            p.choices
                                .iter()
                                .map(|c| format!("\"{c}\""))
                                .collect::<Vec<_>>()
                                .join(" | ")
                        } else if p.kind == ParamType::Integer {
                            "integer".into()
                        } else {
                            "text".into()
                        };
                        format!("{param}: {kind}")
                    })
                    .collect();
                format!("- {name}({}): {}", params.join(", "), spec.description)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A generated text as an action, checked against the schema: `Ok(None)` for plain text
    /// (an answer, not an action).
    pub fn parse(&self, text: &str) -> Result<Option<Action>, CommandError> {
        let text = text.trim();
        if !text.starts_with('{') {
            return Ok(None);
        }
        let invalid = |reason: String| CommandError::Invalid {
            text: text.into(),
            reason,
        };
        let action: Action = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let spec = self
            .specs
            .get(&action.action)
            .ok_or_else(|| invalid(format!("no command '{}'", action.action)))?;
        for (param, p) in &spec.parameters {
            let value = action
                .args
                .get(param)
                .ok_or_else(|| invalid(format!("'{param}' is missing")))?;
            let ok = match (value, p.kind) {
                (serde_json::Value::String(s), ParamType::String) => {
                    p.choices.is_empty() || p.choices.contains(s)
                }
                (serde_json::Value::Number(n), ParamType::Integer) => n.is_i64(),
                _ => false,
            };
            if !ok {
                return Err(invalid(format!("'{param}' = {value} is not allowed")));
            }
        }
        if action.args.len() != spec.parameters.len() {
            return Err(invalid("unknown arguments".into()));
        }
        Ok(Some(action))
    }
}

/// Most assignments of one command's enum parameters [`Commands::choose_enums`] scores.
const MAX_VARIANTS: usize = 32;

/// Every assignment of a command's enum parameters (one empty assignment when it has none,
/// none when there would be more than [`MAX_VARIANTS`]).
fn enum_choices(spec: &CommandSpec) -> Vec<BTreeMap<String, String>> {
    let mut all = vec![BTreeMap::new()];
    for (param, p) in spec
        .parameters
        .iter()
        .filter(|(_, p)| !p.choices.is_empty())
    {
        if all.len() * p.choices.len() > MAX_VARIANTS {
            return Vec::new();
        }
        all = all
            .into_iter()
            .flat_map(|a| {
                p.choices.iter().map(move |c| {
                    let mut a = a.clone();
                    a.insert(param.clone(), c.clone());
                    a
                })
            })
            .collect();
    }
    all
}

/// The JSON of one valid action: of any command, or of one chosen command.
#[derive(Debug, Clone)]
pub struct ActionGrammar {
    patterns: Vec<Vec<Piece>>,
}

impl Commands {
    /// Any one of the commands.
    pub fn grammar(&self) -> ActionGrammar {
        ActionGrammar {
            patterns: self.patterns.clone(),
        }
    }

    /// The command `name` with the parameters in `pinned` fixed to those values (the others
    /// still free), if there is such a command and the values are allowed: an enum's value
    /// one of its choices, an integer's a number without a leading zero.
    pub fn grammar_for(
        &self,
        name: &str,
        pinned: &BTreeMap<String, String>,
    ) -> Option<ActionGrammar> {
        let index = self.specs.keys().position(|k| k == name)?;
        let mut pattern = self.patterns[index].clone();
        for (k, (param, p)) in self.specs[name].parameters.iter().enumerate() {
            if let Some(value) = pinned.get(param) {
                let text = match p.kind {
                    ParamType::Integer => {
                        let digits = value.len() <= MAX_DIGITS as usize
                            && value.bytes().all(|b| b.is_ascii_digit())
                            && (value == "0" || !value.starts_with('0'));
                        digits.then(|| value.clone())?
                    }
                    ParamType::String => {
                        p.choices.contains(value).then_some(())?;
                        format!("\"{value}\"")
                    }
                };
                // Piece 0 opens the action; parameter k is a literal, then its value.
                pattern[2 * k + 2] = Piece::Literal(text.into_bytes());
            }
        }
        Some(ActionGrammar {
            patterns: vec![pattern],
        })
    }

    /// The values of command `name`'s enum parameters that the words call for, by
    /// contextual calibration (Zhao et al. 2021, "Calibrate before use"): each assignment's
    /// action text (enum arguments only) is scored by its log-likelihood after the prompt
    /// holding the words, minus its log-likelihood after the same prompt holding no words.
    /// Greedy decoding alone follows the model's prior: it wrote "ground" for "a map of the
    /// first floor" and for "the second floor" (the facts mention the ground floor).
    ///
    /// Empty when the command has no enums or more than [`MAX_VARIANTS`] assignments.
    pub fn choose_enums(
        &self,
        llm: &Llm,
        name: &str,
        with_words: (&Session, &[Segment]),
        without_words: (&Session, &[Segment]),
    ) -> Result<BTreeMap<String, String>, LlmError> {
        let Some(spec) = self.specs.get(name) else {
            return Ok(BTreeMap::new());
        };
        let variants = enum_choices(spec);
        if variants.len() < 2 {
            return Ok(variants.into_iter().next().unwrap_or_default());
        }
        let texts: Vec<Vec<TokenId>> = variants
            .iter()
            .map(|pinned| {
                let args: Vec<String> = pinned
                    .iter()
                    .map(|(p, v)| format!("\"{p}\": \"{v}\""))
                    .collect();
                let text = format!(
                    "{{\"action\": \"{name}\", \"args\": {{{}}}}}",
                    args.join(", ")
                );
                llm.tokenizer.encode(&text, false)
            })
            .collect::<Result<_, _>>()?;
        // The tokens all variants start with add the same to every calibrated score: they
        // are run once, with each prompt, and only the rest is scored (every scored
        // position costs a full vocabulary of logits).
        let common = texts
            .iter()
            .map(|t| t.iter().zip(&texts[0]).take_while(|(a, b)| a == b).count())
            .min()
            .unwrap_or(0)
            .min(
                texts
                    .iter()
                    .map(Vec::len)
                    .min()
                    .unwrap_or(0)
                    .saturating_sub(1),
            );
        let run = |(session, prompt): (&Session, &[Segment])| -> Result<_, LlmError> {
            let mut s = session.clone();
            let mut segments = prompt.to_vec();
            segments.push(Segment::Tokens(texts[0][..common].to_vec()));
            let logits = llm.prefill(&mut s, &segments)?;
            Ok((s, logits))
        };
        let (with, without) = (run(with_words)?, run(without_words)?);
        let score = |(session, logits): &(Session, Vec<f32>), text: &[TokenId]| {
            llm.log_likelihood_after(&mut session.clone(), logits.clone(), text)
        };
        let mut best = (f32::NEG_INFINITY, BTreeMap::new());
        for (pinned, ids) in variants.into_iter().zip(&texts) {
            let rest = &ids[common..];
            let calibrated = score(&with, rest)? - score(&without, rest)?;
            if calibrated > best.0 {
                best = (calibrated, pinned);
            }
        }
        Ok(best.1)
    }
}

/// A position inside one command's pattern: piece, alternative (for enums), byte offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cursor {
    pattern: u16,
    piece: u16,
    alt: u16,
    at: u16,
}

impl ActionGrammar {
    /// The one string the grammar admits, when it admits exactly one (a single command
    /// whose arguments are all fixed).
    pub fn only_string(&self) -> Option<String> {
        let [pattern] = self.patterns.as_slice() else {
            return None;
        };
        let mut out = Vec::new();
        for piece in pattern {
            match piece {
                Piece::Literal(bytes) => out.extend_from_slice(bytes),
                Piece::OneOf(alts) if alts.len() == 1 => out.extend_from_slice(&alts[0]),
                _ => return None,
            }
        }
        String::from_utf8(out).ok()
    }
}

impl Grammar for ActionGrammar {
    /// Every pattern position the output so far can be at.
    type State = Vec<Cursor>;

    fn start(&self) -> Vec<Cursor> {
        let mut cursors = Vec::new();
        for p in 0..self.patterns.len() {
            self.enter(p as u16, 0, &mut cursors);
        }
        cursors
    }

    fn advance(&self, cursors: &Vec<Cursor>, byte: u8) -> Option<Vec<Cursor>> {
        let mut next = Vec::new();
        for c in cursors {
            self.step_one(*c, byte, &mut next);
        }
        (!next.is_empty()).then_some(next)
    }

    fn accepts(&self, cursors: &Vec<Cursor>) -> bool {
        cursors.iter().any(|c| self.at_end(c))
    }

    fn finished(&self, cursors: &Vec<Cursor>) -> bool {
        cursors.iter().all(|c| self.at_end(c))
    }
}

impl ActionGrammar {
    fn at_end(&self, c: &Cursor) -> bool {
        c.piece as usize == self.patterns[c.pattern as usize].len()
    }

    /// Cursors at the start of `piece` (one per enum value).
    fn enter(&self, pattern: u16, piece: u16, out: &mut Vec<Cursor>) {
        let cursor = |alt| Cursor {
            pattern,
            piece,
            alt,
            at: 0,
        };
        match self.patterns[pattern as usize].get(piece as usize) {
            Some(Piece::OneOf(alts)) => out.extend((0..alts.len() as u16).map(cursor)),
            _ => out.push(cursor(0)),
        }
    }

    fn step_one(&self, c: Cursor, byte: u8, out: &mut Vec<Cursor>) {
        let Some(piece) = self.patterns[c.pattern as usize].get(c.piece as usize) else {
            return;
        };
        let literal = |bytes: &[u8], out: &mut Vec<Cursor>| {
            if bytes.get(c.at as usize) == Some(&byte) {
                if c.at as usize + 1 == bytes.len() {
                    self.enter(c.pattern, c.piece + 1, out);
                } else {
                    out.push(Cursor { at: c.at + 1, ..c });
                }
            }
        };
        match piece {
            Piece::Literal(bytes) => literal(bytes, out),
            Piece::OneOf(alts) => literal(&alts[c.alt as usize], out),
            Piece::Text => {
                if byte == b'"' && c.at > 0 {
                    self.enter(c.pattern, c.piece + 1, out);
                } else if byte >= 0x20 && byte != b'"' && byte != b'\\' && c.at < MAX_TEXT {
                    out.push(Cursor { at: c.at + 1, ..c });
                }
            }
            Piece::Integer => {
                let leading_zero = c.at == 1 && self.first_digit_zero(&c);
                if byte.is_ascii_digit() && c.at < MAX_DIGITS && !leading_zero {
                    out.push(Cursor {
                        at: c.at + 1,
                        // Remember whether the number started with 0 (then it is complete).
                        alt: if c.at == 0 {
                            u16::from(byte == b'0')
                        } else {
                            c.alt
                        },
                        ..c
                    });
                } else if c.at > 0 {
                    let mut entered = Vec::new();
                    self.enter(c.pattern, c.piece + 1, &mut entered);
                    for e in entered {
                        self.step_one(e, byte, out);
                    }
                }
            }
        }
    }

    fn first_digit_zero(&self, c: &Cursor) -> bool {
        c.alt == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm::grammar::advance_bytes;

    fn museum() -> Commands {
        let specs: BTreeMap<String, CommandSpec> = toml::from_str(
            r#"
            [show_map]
            description = "Show a map"
            parameters = { floor = { enum = ["ground", "first"] } }
            [call_staff]
            description = "Call someone"
            parameters = { reason = { type = "string" }, people = { type = "integer" } }
            [help]
            description = "Help"
            "#,
        )
        .unwrap();
        Commands::new(specs).unwrap()
    }

    fn accepted(g: &ActionGrammar, text: &str) -> bool {
        advance_bytes(g, &g.start(), text.as_bytes()).is_some_and(|s| g.accepts(&s))
    }

    #[test]
    fn the_grammar_accepts_exactly_the_valid_actions() {
        let c = museum();
        let g = c.grammar();
        for ok in [
            r#"{"action": "show_map", "args": {"floor": "first"}}"#,
            r#"{"action": "call_staff", "args": {"people": 12, "reason": "lost child"}}"#,
            r#"{"action": "help", "args": {}}"#,
        ] {
            assert!(accepted(&g, ok), "{ok}");
            assert!(c.parse(ok).unwrap().is_some(), "{ok}");
        }
        for bad in [
            r#"{"action": "show_map", "args": {"floor": "third"}}"#,
            r#"{"action": "show_map", "args": {"floor": "first"}"#,
            r#"{"action": "open_door", "args": {}}"#,
            r#"{"action": "call_staff", "args": {"people": 012, "reason": "x"}}"#,
            r#"{"action": "call_staff", "args": {"people": 1, "reason": ""}}"#,
            r#"{"action": "call_staff", "args": {"people": 1, "reason": "a\"b"}}"#,
            r#"{"action":"help","args":{}}"#,
            "The cafe is on the ground floor.",
            "",
        ] {
            assert!(!accepted(&g, bad), "{bad}");
        }
        let done = advance_bytes(&g, &g.start(), br#"{"action": "help", "args": {}}"#).unwrap();
        assert!(g.finished(&done));
        let open = advance_bytes(
            &g,
            &g.start(),
            br#"{"action": "call_staff", "args": {"people": 1"#,
        );
        assert!(open.is_some_and(|s| !g.finished(&s) && !g.accepts(&s)));
        // Restricted to one command, the others are refused.
        let free = BTreeMap::new();
        let map = c.grammar_for("show_map", &free).unwrap();
        assert!(accepted(
            &map,
            r#"{"action": "show_map", "args": {"floor": "ground"}}"#
        ));
        assert!(!accepted(&map, r#"{"action": "help", "args": {}}"#));
        // With an enum value pinned, the other values are refused too.
        let pinned = BTreeMap::from([("floor".to_string(), "first".to_string())]);
        let first = c.grammar_for("show_map", &pinned).unwrap();
        assert!(accepted(
            &first,
            r#"{"action": "show_map", "args": {"floor": "first"}}"#
        ));
        assert!(!accepted(
            &first,
            r#"{"action": "show_map", "args": {"floor": "ground"}}"#
        ));
        let roof = BTreeMap::from([("floor".to_string(), "roof".to_string())]);
        assert!(c.grammar_for("show_map", &roof).is_none());
        assert!(c.grammar_for("fly", &free).is_none());
        assert_eq!(
            first.only_string().as_deref(),
            Some(r#"{"action": "show_map", "args": {"floor": "first"}}"#)
        );
        assert_eq!(map.only_string(), None);
        let staff = c.grammar_for("call_staff", &free).unwrap();
        assert_eq!(staff.only_string(), None);
        assert_eq!(enum_choices(&c.specs["show_map"]).len(), 2);
        assert_eq!(enum_choices(&c.specs["help"]), vec![BTreeMap::new()]);
    }

    #[test]
    fn parse_checks_actions_against_the_schema() {
        let c = museum();
        assert_eq!(
            c.parse(r#"{"action": "show_map", "args": {"floor": "first"}}"#)
                .unwrap()
                .unwrap()
                .args["floor"],
            "first"
        );
        assert_eq!(c.parse("Open 9 to 5.").unwrap(), None);
        for bad in [
            r#"{"action": "show_map", "args": {"floor": "roof"}}"#,
            r#"{"action": "show_map", "args": {}}"#,
            r#"{"action": "show_map", "args": {"floor": "first", "x": 1}}"#,
            r#"{"action": "fly", "args": {}}"#,
            r#"{"action": "show_map""#,
        ] {
            assert!(c.parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_command_tables_are_named() {
        let specs: BTreeMap<String, CommandSpec> = toml::from_str(
            r#"[go]
            description = "x"
            parameters = { to = { enum = ["a\"b"] } }"#,
        )
        .unwrap();
        let e = Commands::new(specs).unwrap_err().to_string();
        assert!(e.contains("'go'") && e.contains("'to'"), "{e}");
        let specs: BTreeMap<String, CommandSpec> =
            toml::from_str("[\"open door\"]\ndescription = \"x\"").unwrap();
        assert!(Commands::new(specs).is_err());
    }
}
