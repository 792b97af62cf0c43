//! The kiosk's evaluation: sets of typed (or spoken) utterances to several venues, each with
//! what a right reply is, scored per kind.
//!
//! ```toml
//! [venues]                       # knowledge files, relative to this file
//! museum = "../museum.toml"
//!
//! [[case]]
//! venue = "museum"
//! kind = "fact"                  # fact | abstain | command | talk
//! say = "Where can I get a coffee?"   # or audio = "../../speech/clip03.wav"
//! expect = ["ground floor"]      # fact: every phrase in the answer
//! # command: action = "show_map", args = { floor = "first" }
//! ```
//!
//! A fact is right when the answer holds every expected phrase; an abstention when the
//! kiosk says its fallback line; a command when the action and every listed argument match;
//! talk when the kiosk neither acts nor states anything (no answer, or the fallback line).
//! `fixtures/kiosk/eval/dev.toml`, `dev2.toml` and `heldout.toml` are what the kiosk has
//! been tuned on; `heldout2.toml` (with a fourth venue, the library) and `heldout3.toml`
//! (a leisure centre and a clinic) were each written blind and scored before anything was
//! changed for them (README, "Kiosk grounding").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use llm::Llm;

use super::Knowledge;
use super::answer::{AnswerConfig, Answerer, Reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Fact,
    Abstain,
    Command,
    Talk,
}

/// One utterance and what a right reply is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub venue: String,
    pub kind: Kind,
    /// The typed words, or
    #[serde(default)]
    pub say: Option<String>,
    /// a recording of them (relative to the set's file).
    #[serde(default)]
    pub audio: Option<PathBuf>,
    #[serde(default)]
    pub expect: Vec<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub args: BTreeMap<String, toml::Value>,
}

/// An evaluation set as read from its file.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub name: String,
    /// Venue name to knowledge file.
    pub venues: BTreeMap<String, PathBuf>,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    venues: BTreeMap<String, PathBuf>,
    case: Vec<Case>,
}

impl EvalSet {
    /// Reads a set; errors name the file and the case.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the evaluation set {}", path.display()))?;
        let file: SetFile = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let venues = file
            .venues
            .into_iter()
            .map(|(name, p)| (name, dir.join(p)))
            .collect::<BTreeMap<_, _>>();
        let mut cases = file.case;
        for (i, case) in cases.iter_mut().enumerate() {
            let at = || format!("{}: case {} ({:?})", path.display(), i + 1, case.say);
            if !venues.contains_key(&case.venue) {
                bail!("{}: venue '{}' is not under [venues]", at(), case.venue);
            }
            if case.say.is_some() == case.audio.is_some() {
                bail!("{}: give one of `say` or `audio`", at());
            }
            if case.kind == Kind::Command && case.action.is_none() {
                bail!("{}: a command case needs `action`", at());
            }
            if case.kind == Kind::Fact && case.expect.is_empty() {
                bail!("{}: a fact case needs `expect`", at());
            }
            if let Some(audio) = &case.audio {
                case.audio = Some(dir.join(audio));
            }
        }
        let name = path
            .file_stem()
            .map_or("set".into(), |s| s.to_string_lossy().into_owned());
        Ok(EvalSet {
            name,
            venues,
            cases,
        })
    }
}

/// One case's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub venue: String,
    pub kind: Kind,
    /// What the kiosk was given (the transcript, for a recording).
    pub heard: String,
    pub right: bool,
    pub reply: Reply,
}

/// Right and total, for one kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tally {
    pub right: usize,
    pub total: usize,
}

impl Tally {
    pub fn share(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.right as f64 / self.total as f64
        }
    }
}

/// A set's scores.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub set: String,
    pub by_kind: BTreeMap<Kind, Tally>,
    /// Actions taken for utterances that asked for none (talk, facts, abstentions).
    pub unasked_actions: usize,
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn new(set: &str, outcomes: Vec<Outcome>) -> Self {
        let mut by_kind: BTreeMap<Kind, Tally> = BTreeMap::new();
        for o in &outcomes {
            let t = by_kind.entry(o.kind).or_default();
            t.total += 1;
            t.right += usize::from(o.right);
        }
        let unasked_actions = outcomes
            .iter()
            .filter(|o| o.kind != Kind::Command && o.reply.action.is_some())
            .count();
        Report {
            set: set.to_owned(),
            by_kind,
            unasked_actions,
            outcomes,
        }
    }

    pub fn share(&self, kind: Kind) -> f64 {
        self.by_kind.get(&kind).copied().unwrap_or_default().share()
    }

    /// The scores as text, one line per kind, then the cases that went wrong.
    pub fn text(&self, every_case: bool) -> String {
        let mut out = format!("{}:\n", self.set);
        for (kind, t) in &self.by_kind {
            out.push_str(&format!(
                "  {:<8} {:>3}/{:<3} {:5.1}%\n",
                format!("{kind:?}").to_lowercase(),
                t.right,
                t.total,
                100.0 * t.share()
            ));
        }
        out.push_str(&format!(
            "  actions for utterances that asked for none: {}\n",
            self.unasked_actions
        ));
        for o in self.outcomes.iter().filter(|o| every_case || !o.right) {
            let reply = match (&o.reply.action, &o.reply.answer) {
                (Some(a), _) => serde_json::to_string(a).unwrap_or_default(),
                (None, Some(a)) => a.clone(),
                (None, None) => "(no reply)".into(),
            };
            let mark = if o.right { "ok  " } else { "MISS" };
            out.push_str(&format!(
                "  {mark} [{} {:?}] {:?} -> {reply}\n",
                o.venue, o.kind, o.heard
            ));
        }
        out
    }
}

/// Turns a recording into its transcript.
pub type Transcribe<'a> = &'a dyn Fn(&Path) -> Result<String>;

/// Runs every case of a set: one [`Answerer`] per venue, typed cases as they are, recorded
/// ones through `transcribe` (an error for them when there is none).
pub fn run(
    set: &EvalSet,
    llm: &Arc<Llm>,
    config: &AnswerConfig,
    transcribe: Option<Transcribe>,
) -> Result<Report> {
    let mut answerers = BTreeMap::new();
    let mut outcomes = Vec::new();
    for case in &set.cases {
        if !answerers.contains_key(&case.venue) {
            let path = &set.venues[&case.venue];
            let knowledge = Knowledge::load(path)?;
            let answerer = Answerer::new(llm.clone(), &knowledge, config.clone())
                .with_context(|| format!("{}", path.display()))?;
            answerers.insert(case.venue.clone(), answerer);
        }
        let heard = match (&case.say, &case.audio) {
            (Some(say), _) => say.clone(),
            (None, Some(audio)) => {
                let transcribe = transcribe.context("a recorded case needs a transcriber")?;
                transcribe(audio)?.trim().to_owned()
            }
            (None, None) => bail!("a case to {} has neither `say` nor `audio`", case.venue),
        };
        let reply = answerers[&case.venue].reply(&heard, None, |_| {})?;
        outcomes.push(Outcome {
            venue: case.venue.clone(),
            kind: case.kind,
            right: judge(case, &reply),
            heard,
            reply,
        });
    }
    Ok(Report::new(&set.name, outcomes))
}

/// Whether a reply is right for its case.
pub fn judge(case: &Case, reply: &Reply) -> bool {
    let says_nothing = reply.answer.is_none() || reply.is_fallback();
    match case.kind {
        Kind::Fact => {
            let answer = reply.answer.as_deref().unwrap_or_default().to_lowercase();
            reply.action.is_none()
                && !reply.is_fallback()
                && case
                    .expect
                    .iter()
                    .all(|e| answer.contains(&e.to_lowercase()))
        }
        Kind::Abstain => reply.action.is_none() && reply.is_fallback(),
        Kind::Talk => reply.action.is_none() && says_nothing,
        Kind::Command => reply.action.as_ref().is_some_and(|a| {
            Some(&a.action) == case.action.as_ref()
                && case.args.iter().all(|(k, want)| {
                    let got = a.args.get(k);
                    match (want, got) {
                        (toml::Value::String(w), Some(serde_json::Value::String(g))) => w == g,
                        (toml::Value::Integer(w), Some(serde_json::Value::Number(g))) => {
                            g.as_i64() == Some(*w)
                        }
                        _ => false,
                    }
                })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bundled set reads, names only its venues, and its venues' files load.
    #[test]
    fn the_bundled_sets_and_their_venues_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kiosk/eval");
        for name in [
            "dev.toml",
            "dev2.toml",
            "heldout.toml",
            "heldout2.toml",
            "spoken.toml",
        ] {
            let set = EvalSet::load(&dir.join(name)).unwrap();
            assert!(!set.cases.is_empty(), "{name}");
            for (venue, path) in &set.venues {
                let k = super::super::Knowledge::load(path).unwrap();
                let commands = super::super::actions::Commands::new(k.commands).unwrap();
                for c in set.cases.iter().filter(|c| &c.venue == venue) {
                    if let Some(action) = &c.action {
                        assert!(commands.specs.contains_key(action), "{name}: {action}");
                    }
                    if let Some(audio) = &c.audio {
                        assert!(audio.is_file(), "{}", audio.display());
                    }
                }
            }
        }
    }

    #[test]
    fn a_set_naming_an_unknown_venue_is_refused_with_its_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "[venues]\nmuseum = \"m.toml\"\n[[case]]\nvenue = \"zoo\"\nkind = \"talk\"\nsay = \"hi\"\n",
        )
        .unwrap();
        let e = format!("{:#}", EvalSet::load(&path).unwrap_err());
        assert!(e.contains("s.toml: case 1") && e.contains("'zoo'"), "{e}");
    }
}
