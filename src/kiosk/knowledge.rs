//! A kiosk's knowledge file: its name, instructions, facts and commands, in TOML or in
//! Markdown (by extension: `.md` / `.markdown`).
//!
//! TOML: `name`, `instructions`, `facts` strings, an optional `fallback` (what the kiosk
//! says when its facts do not answer) and a `[commands.NAME]` table
//! (`fixtures/kiosk/museum.toml`). Markdown, for people who keep such notes as documents:
//!
//! ```markdown
//! # City Museum information kiosk
//! You are the information kiosk of the City Museum. ...   <- instructions
//! ## Facts
//! - The cafe is on the ground floor.
//! ## Fallback
//! I'm sorry, I don't know that; please ask at the front desk.   <- optional
//! ## Commands
//! ### show_map
//! Show a map of one floor of the museum                  <- description
//! - floor: ground | first | second                       <- an enum parameter
//! - reason: text                                         <- a string (`integer`: a number)
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// One command of a file's `[commands]` table: what it does and its parameters (their
/// checks and grammar are `super::actions`').
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub description: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type", default)]
    pub kind: ParamType,
    /// The allowed values (implies a string).
    #[serde(rename = "enum", default)]
    pub choices: Vec<String>,
    #[serde(default)]
    pub description: String,
}

impl ParamSpec {
    pub fn of(kind: ParamType, choices: Vec<String>) -> Self {
        ParamSpec {
            kind,
            choices,
            description: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    #[default]
    String,
    Integer,
}

/// What the kiosk knows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knowledge {
    pub name: String,
    pub instructions: String,
    pub facts: String,
    /// What the kiosk says when no fact answers; see [`Knowledge::fallback_line`].
    #[serde(default)]
    pub fallback: Option<String>,
    /// Actions the kiosk can take, by name.
    #[serde(default)]
    pub commands: BTreeMap<String, CommandSpec>,
}

impl Knowledge {
    /// Reads a knowledge file; errors name the file and, for Markdown, the line.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the knowledge file {}", path.display()))?;
        let markdown = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("md" | "markdown")
        );
        let parsed = if markdown {
            Self::from_markdown(&text)
        } else {
            toml::from_str(&text).map_err(anyhow::Error::from)
        };
        parsed.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The facts one by one: each `- ` item (a line without one continues the item before).
    pub fn fact_list(&self) -> Vec<String> {
        let mut facts: Vec<String> = Vec::new();
        for line in self.facts.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match (line.strip_prefix("- "), facts.last_mut()) {
                (None, Some(last)) => {
                    last.push(' ');
                    last.push_str(line);
                }
                (item, _) => facts.push(item.unwrap_or(line).trim().to_owned()),
            }
        }
        facts
    }

    /// What the kiosk says when its facts do not answer: the file's `fallback`, else one made
    /// from the instructions' "tell them to ..." ("ask at the front desk"), else a plain
    /// apology that sends the visitor to the staff.
    pub fn fallback_line(&self) -> String {
        if let Some(line) = self
            .fallback
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            return line.to_owned();
        }
        let lower = self.instructions.to_lowercase();
        let advice = ["tell them to ", "tell the visitor to ", "tell visitors to "]
            .iter()
            .find_map(|p| lower.find(p).map(|at| at + p.len()))
            .map(|at| {
                let rest = &self.instructions[at..];
                rest[..rest.find(['.', '\n']).unwrap_or(rest.len())]
                    .trim()
                    .to_owned()
            })
            .filter(|a| !a.is_empty());
        match advice {
            Some(a) => format!("I'm sorry, I don't know that; please {a}."),
            None => "I'm sorry, I don't know that; please ask a member of staff.".to_owned(),
        }
    }

    pub fn from_markdown(text: &str) -> Result<Self> {
        let mut name = None;
        let mut section = Section::Instructions;
        let (mut instructions, mut facts) = (String::new(), String::new());
        let mut fallback = String::new();
        let mut commands: BTreeMap<String, CommandSpec> = BTreeMap::new();
        let mut command: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let at = n + 1;
            if let Some(title) = line.strip_prefix("# ") {
                name.get_or_insert_with(|| title.trim().to_owned());
            } else if let Some(heading) = line.strip_prefix("## ") {
                section = match heading.trim().to_lowercase().as_str() {
                    "facts" => Section::Facts,
                    "fallback" => Section::Fallback,
                    "commands" => Section::Commands,
                    other => {
                        bail!("line {at}: unknown section '{other}' (Facts, Fallback or Commands)")
                    }
                };
            } else if let Some(heading) = line.strip_prefix("### ") {
                if section != Section::Commands {
                    bail!("line {at}: a command heading outside '## Commands'");
                }
                let c = heading.trim().to_owned();
                commands.insert(
                    c.clone(),
                    CommandSpec {
                        description: String::new(),
                        parameters: BTreeMap::new(),
                    },
                );
                command = Some(c);
            } else {
                match section {
                    Section::Instructions => push_line(&mut instructions, line),
                    Section::Facts => push_line(&mut facts, line),
                    Section::Fallback => push_line(&mut fallback, line),
                    Section::Commands => {
                        let Some(spec) = command.as_ref().and_then(|c| commands.get_mut(c)) else {
                            if line.trim().is_empty() {
                                continue;
                            }
                            bail!("line {at}: text under '## Commands' before any '### name'");
                        };
                        command_line(spec, line).with_context(|| format!("line {at}"))?;
                    }
                }
            }
        }
        let name = name.context("no '# name' title")?;
        if facts.trim().is_empty() {
            bail!("no '## Facts' section");
        }
        Ok(Knowledge {
            name,
            instructions: instructions.trim().to_owned(),
            facts: facts.trim().to_owned(),
            fallback: Some(fallback.trim().replace('\n', " ")).filter(|f| !f.is_empty()),
            commands,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Section {
    Instructions,
    Facts,
    Fallback,
    Commands,
}

fn push_line(to: &mut String, line: &str) {
    to.push_str(line);
    to.push('\n');
}

/// A line under a command heading: `- name: a | b`, `- name: text|integer`, or description.
fn command_line(spec: &mut CommandSpec, line: &str) -> Result<()> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(());
    }
    let Some(param) = line.strip_prefix("- ") else {
        if !spec.description.is_empty() {
            spec.description.push(' ');
        }
        spec.description.push_str(line);
        return Ok(());
    };
    let (name, kind) = param
        .split_once(':')
        .with_context(|| format!("parameter '{param}' is not 'name: type'"))?;
    let kind = kind.trim();
    let p = match kind {
        "text" | "string" => ParamSpec::of(ParamType::String, Vec::new()),
        "integer" => ParamSpec::of(ParamType::Integer, Vec::new()),
        choices => ParamSpec::of(
            ParamType::String,
            choices.split('|').map(|c| c.trim().to_owned()).collect(),
        ),
    };
    spec.parameters.insert(name.trim().to_owned(), p);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_knowledge_reads_like_the_toml() {
        let k = Knowledge::from_markdown(
            "# Museum kiosk\nBe brief.\n\n## Facts\n- Cafe: ground floor.\n\n## Commands\n\
             ### show_map\nShow a map\nof one floor\n- floor: ground | first\n\
             ### call_staff\nCall someone\n- reason: text\n- people: integer\n",
        )
        .unwrap();
        assert_eq!(k.name, "Museum kiosk");
        assert_eq!(k.instructions, "Be brief.");
        assert_eq!(k.facts, "- Cafe: ground floor.");
        let map = &k.commands["show_map"];
        assert_eq!(map.description, "Show a map of one floor");
        assert_eq!(map.parameters["floor"].choices, vec!["ground", "first"]);
        let staff = &k.commands["call_staff"];
        assert_eq!(staff.parameters["people"].kind, ParamType::Integer);
        assert_eq!(staff.parameters["reason"].kind, ParamType::String);
        assert!(crate::kiosk::actions::Commands::new(k.commands).is_ok());
    }

    /// The bundled museum in both formats: the same kiosk.
    #[test]
    fn the_bundled_markdown_and_toml_files_agree() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kiosk");
        let toml = Knowledge::load(&dir.join("museum.toml")).unwrap();
        let md = Knowledge::load(&dir.join("museum.md")).unwrap();
        assert_eq!(md.name, toml.name);
        assert_eq!(md.instructions, toml.instructions.trim());
        assert_eq!(md.facts, toml.facts.trim());
        let describe = |k: Knowledge| {
            crate::kiosk::actions::Commands::new(k.commands)
                .unwrap()
                .describe()
        };
        assert_eq!(describe(md), describe(toml));
    }

    #[test]
    fn facts_are_items_and_the_fallback_comes_from_the_file_or_the_instructions() {
        let mut k = Knowledge::from_markdown(
            "# K\nBe brief. If the facts do not say, tell them to ask at the desk.\n\
             ## Facts\n- Cafe: ground floor,\n  next to the shop.\n- Toilets: every floor.\n",
        )
        .unwrap();
        assert_eq!(
            k.fact_list(),
            [
                "Cafe: ground floor, next to the shop.",
                "Toilets: every floor."
            ]
        );
        assert_eq!(
            k.fallback_line(),
            "I'm sorry, I don't know that; please ask at the desk."
        );
        k.instructions = "Be brief.".into();
        assert!(k.fallback_line().contains("member of staff"));
        let k = Knowledge::from_markdown("# K\n## Facts\n- x\n## Fallback\nAsk Anna.\n").unwrap();
        assert_eq!(k.fallback_line(), "Ask Anna.");
    }

    #[test]
    fn bad_markdown_is_named_by_line() {
        for (text, want) in [
            ("Be brief.\n## Facts\n- x\n", "no '# name'"),
            ("# K\n## Facts\n- x\n## Prices\n", "line 4"),
            ("# K\n## Facts\n- x\n## Commands\n- floor: a\n", "line 5"),
            (
                "# K\n## Facts\n- x\n## Commands\n### go\n- floor a\n",
                "line 6",
            ),
            ("# K\n### go\n", "line 2"),
            ("# K\nBe brief.\n", "no '## Facts'"),
        ] {
            let e = format!("{:#}", Knowledge::from_markdown(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
