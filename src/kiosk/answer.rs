//! What the kiosk says to one utterance: nothing (talk), an action, an answer from its
//! facts, or its fallback line.
//!
//! An answer is grounded three times over. Retrieval puts only the facts the question is
//! about into the prompt (after a cached head that is the same for every utterance, so a
//! longer knowledge file costs nothing per question); a question whose best fact covers
//! too little of it gets the fallback line without generating at all; and the generated
//! sentence is checked against the facts it was given (`super::grounding`): one that
//! claims what they do not hold, or says yes where they say no, is replaced by the best
//! fact's own words.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result};
use encoders::text::{MiniLm, SentenceEmbedding};
use encoders::vision::Scene;
use fusion::prompt::{FramedPrompt, PrefixCache};
use fusion::speech::{Utterance, UtteranceProjector};
use llm::{GenerateParams, Llm, SamplingParams};
use serde::Serialize;

use super::actions::{Action, Commands, ParamType};
use super::asked::{self, Wanted};
use super::grounding::{self, Unsupported};
use super::knowledge::Knowledge;
use super::retrieval::{FactIndex, Retrieval, is_modifier, terms};
use super::routing::{Anchors, Decision, Route, Router, said_arguments};

const ASK: &str = "\nAnswer in one short sentence, from the facts.";
const ACT: &str = "\nReply with only the action the visitor asks for, as JSON.";

/// How the kiosk decides; the defaults are what `percept eval kiosk` was tuned with on its
/// development set (`fixtures/kiosk/eval/dev.toml`).
#[derive(Debug, Clone)]
pub struct AnswerConfig {
    /// How much better (nats) a command must explain the words than a question does.
    pub command_margin: f32,
    /// Longest answer, in tokens.
    pub max_tokens: usize,
    /// Most facts in the prompt.
    pub facts_in_prompt: usize,
    /// How many of the best ranked facts are tried for one that can give the answer.
    pub candidates: usize,
    /// A fact after the first goes into the prompt when its BM25 score is at least this
    /// share of the first's.
    pub second_fact_ratio: f32,
    /// Below this coverage of the question by its best fact, the kiosk abstains (ranking
    /// by words alone).
    pub min_coverage: f32,
    /// The sentence encoder that ranks facts by meaning; `None` ranks by words alone (BM25).
    pub encoder: Option<Arc<MiniLm>>,
    /// Ranking by meaning: below this score of the chosen fact (its similarity plus
    /// [`super::retrieval::COVERAGE_WEIGHT`] times its coverage) the kiosk abstains.
    pub min_support: f32,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        AnswerConfig {
            command_margin: 3.5,
            max_tokens: 48,
            // One fact: a second costs about 75 ms of prompt per question at two threads
            // and answered no more of the evaluation sets.
            facts_in_prompt: 1,
            candidates: 3,
            second_fact_ratio: 0.6,
            min_coverage: 0.15,
            encoder: None,
            min_support: 0.3,
        }
    }
}

/// Where an answer's words came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The language model's sentence, checked against the facts.
    Generated,
    /// The best fact's own words (the generated sentence did not pass the check).
    Fact,
    /// The knowledge file's fallback line.
    Fallback,
}

/// The evidence behind an answer.
#[derive(Debug, Clone, Serialize)]
pub struct Grounding {
    pub source: Source,
    /// The facts given to the model, best first (indices into the knowledge file's facts).
    pub facts: Vec<usize>,
    /// How much of the question the best fact covers, 0 to 1.
    pub coverage: f32,
    /// The cosine of the question's and the chosen fact's embeddings (ranking by meaning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    /// The kind of answer the question wants.
    pub wanted: Wanted,
    /// The things the question names that no fact holds (a reason to abstain).
    pub unknown: Vec<String>,
    /// The model's sentence when it was not kept, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<(String, Unsupported)>,
}

/// The kiosk's reply to one utterance.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    /// What the kiosk says; none for talk and for an action.
    pub answer: Option<String>,
    pub action: Option<Action>,
    pub decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grounding: Option<Grounding>,
}

impl Reply {
    pub fn is_fallback(&self) -> bool {
        self.grounding
            .as_ref()
            .is_some_and(|g| g.source == Source::Fallback)
    }
}

/// A knowledge file made ready to answer from: its facts indexed, the prompt's head in the
/// model's cache, the commands' hypotheses scored once.
pub struct Answerer {
    llm: Arc<Llm>,
    config: AnswerConfig,
    facts: Vec<String>,
    index: FactIndex,
    /// The facts' sentence embeddings, when `config.encoder` is given.
    meanings: Vec<SentenceEmbedding>,
    /// The embeddings of the parts of facts an answer may be (see [`choosable_parts`]),
    /// likewise.
    part_meanings: HashMap<String, SentenceEmbedding>,
    /// The names the facts hold, as terms: see [`names_of`].
    names: BTreeSet<String>,
    fallback: String,
    /// The kiosk's name, which answers may use.
    venue: String,
    commands: Commands,
    router: Option<Router>,
    anchors: Anchors,
    /// The head for answers: the instructions alone (with the commands' list in view, the
    /// 135M model answered "What time do you open on Sunday?" with "The kiosk can also do
    /// this action:"); its tail asks for one sentence from the facts.
    answers: PrefixCache,
    /// The head for actions: the instructions and the commands; its tail asks for JSON.
    actions: PrefixCache,
}

impl Answerer {
    pub fn new(llm: Arc<Llm>, knowledge: &Knowledge, config: AnswerConfig) -> Result<Self> {
        let commands = Commands::new(knowledge.commands.clone())?;
        let facts = knowledge.fact_list();
        let answers = FramedPrompt::chat(&llm, knowledge.instructions.trim(), "", ASK)?;
        let answers = PrefixCache::new(&llm, &answers)?;
        let system = system_prompt(knowledge, &commands);
        let actions = FramedPrompt::chat(&llm, &system, "", ACT)?;
        let actions = PrefixCache::new(&llm, &actions)?;
        let router = (!commands.is_empty())
            .then(|| Router::new(&llm, &commands, &knowledge.name, config.command_margin))
            .transpose()?;
        let (meanings, part_meanings) = match &config.encoder {
            Some(encoder) => (encoder.embed_all(&facts)?, embed_parts(encoder, &facts)?),
            None => (Vec::new(), HashMap::new()),
        };
        Ok(Answerer {
            meanings,
            part_meanings,
            index: FactIndex::new(&facts).ignoring(&knowledge.name),
            names: names_of(&facts),
            facts,
            fallback: knowledge.fallback_line(),
            venue: knowledge.name.clone(),
            anchors: Anchors::new(&commands, &knowledge.name),
            commands,
            router,
            answers,
            actions,
            config,
            llm,
        })
    }

    /// Positions of the answers' cached head: the same whatever the number of facts, which
    /// go into each utterance's own rows (only the retrieved ones).
    pub fn head_positions(&self) -> usize {
        self.answers.len()
    }

    pub fn fallback(&self) -> &str {
        &self.fallback
    }

    pub fn facts(&self) -> &[String] {
        &self.facts
    }

    /// The reply to `transcript`, with `scene` in view; `on_text` sees the model's text as
    /// it is generated (for first-token latency).
    pub fn reply(
        &self,
        transcript: &str,
        scene: Option<&Scene>,
        mut on_text: impl FnMut(&str),
    ) -> Result<Reply> {
        let decision = match &self.router {
            Some(router) => router.decide(&self.llm, &self.anchors, transcript)?,
            None => Decision::without_commands(transcript),
        };
        let scene = scene.filter(|s| refers_to_view(transcript, s));
        match decision.route.clone() {
            Route::Talk => Ok(Reply {
                answer: None,
                action: None,
                decision,
                grounding: None,
            }),
            Route::Command(name) => {
                let action = self.act(&name, transcript, scene, &mut on_text)?;
                Ok(Reply {
                    answer: None,
                    action: Some(action),
                    decision,
                    grounding: None,
                })
            }
            Route::Question => {
                let (answer, grounding) = self.answer(transcript, scene, &mut on_text)?;
                Ok(Reply {
                    answer: Some(answer),
                    action: None,
                    decision,
                    grounding: Some(grounding),
                })
            }
        }
    }

    /// The facts that go into the prompt: the best ranked that can give the kind of answer
    /// asked for and hold every name the question shares with the file ("Millford" in "a
    /// single ticket to Millford" rules out the fact on Northbridge's fares), and a second
    /// such fact within `second_fact_ratio` of its score.
    fn chosen(&self, retrieval: &Retrieval, question: &str, kind: Wanted) -> Vec<usize> {
        let asked_terms = terms(question);
        let holds_all = |fact: usize, ts: &[&String]| ts.iter().all(|t| self.index.holds(fact, t));
        let named: Vec<&String> = asked_terms
            .iter()
            .filter(|t| self.names.contains(*t))
            .collect();
        // A fact below the best stands in for it only if it holds what the question shares
        // with the best: "What time does the cafe close?" is about the cafe, whose fact gives
        // no time, not about the opening hours that share "close".
        let about: Vec<&String> = retrieval.best().map_or(Vec::new(), |top| {
            asked_terms
                .iter()
                .filter(|t| self.index.holds(top.fact, t) && !is_modifier(t))
                .collect()
        });
        let fits = |fact: usize| asked::gives(&self.facts[fact], kind) && holds_all(fact, &named);
        let mut fitting = retrieval
            .hits
            .iter()
            .take(self.config.candidates)
            .filter(|h| fits(h.fact));
        let Some(best) = fitting.next() else {
            return Vec::new();
        };
        if !holds_all(best.fact, &about) {
            return Vec::new();
        }
        std::iter::once(best)
            .chain(fitting.filter(|h| h.score >= best.score * self.config.second_fact_ratio))
            .take(self.config.facts_in_prompt)
            .map(|h| h.fact)
            .collect()
    }

    fn answer(
        &self,
        question: &str,
        scene: Option<&Scene>,
        on_text: &mut impl FnMut(&str),
    ) -> Result<(String, Grounding)> {
        let mut retrieval = self.index.rank(question);
        let asked = match &self.config.encoder {
            Some(encoder) => Some(encoder.embed(question)?),
            None => None,
        };
        if let Some(asked) = &asked {
            let similarities: Vec<f32> =
                self.meanings.iter().map(|m| m.similarity(asked)).collect();
            retrieval = retrieval.by_meaning(&similarities);
        }
        let wanted = asked::wanted(question);
        let chosen = self.chosen(&retrieval, question, wanted);
        let things = asked::unknown_things(question, &retrieval.unknown);
        let hit = chosen
            .first()
            .and_then(|&f| retrieval.hits.iter().find(|h| h.fact == f));
        let coverage = hit.map_or(0.0, |h| h.coverage);
        let similarity = hit.and_then(|h| h.similarity);
        let supported = match similarity {
            Some(_) => hit.is_some_and(|h| h.score >= self.config.min_support),
            None => coverage >= self.config.min_coverage,
        };
        let mut grounding = Grounding {
            source: Source::Fallback,
            facts: chosen.clone(),
            coverage,
            similarity,
            wanted,
            unknown: things.clone(),
            rejected: None,
        };
        // A day is when, not what ("on Saturday" where the fact says "this weekend").
        let unknown_name = grounding::names(question)
            .iter()
            .filter(|n| !n.ends_with("day"))
            .any(|n| terms(n).iter().any(|t| !self.index.knows(t)));
        if chosen.is_empty() || !supported || unknown_name || !things.is_empty() {
            on_text(&self.fallback);
            return Ok((self.fallback.clone(), grounding));
        }
        // The best fact supports an answer only through the part the question is about:
        // "open on Sunday from 9 am" takes Monday's hour. That part alone goes into the
        // prompt (fewer tokens before the first, and nothing else to run on into); the
        // facts after the first are context only: a platform taken from the fact next to
        // the right one is the error they invite.
        let close = |part: &str| {
            let asked = asked.as_ref()?;
            Some(self.part_meanings.get(part)?.similarity(asked))
        };
        let best = best_clause(&self.facts[chosen[0]], question, wanted, &close);
        let facts: Vec<&str> = std::iter::once(best.as_str())
            .chain(chosen[1..].iter().map(|&i| self.facts[i].as_str()))
            .collect();
        let rows = UtteranceProjector.project(
            &Utterance {
                transcript: question,
                facts: &facts,
                scene,
            },
            &self.llm,
        )?;
        let (mut session, prompt) = self.answers.start(rows);
        let params = GenerateParams {
            max_tokens: self.config.max_tokens,
            sampling: SamplingParams::default(),
            // One sentence is the answer: what follows its stop is not needed.
            stop: vec!["\n".into(), ". ".into()],
        };
        let text = self
            .llm
            .generate(&mut session, &prompt, &params, |t| on_text(t))?
            .text;
        let said = grounding::one_sentence(&text);
        match grounding::check(&said, question, &[best.as_str()], &self.venue) {
            Ok(()) => {
                grounding.source = Source::Generated;
                Ok((said, grounding))
            }
            Err(why) => {
                grounding.source = Source::Fact;
                grounding.rejected = Some((said, why));
                Ok((best, grounding))
            }
        }
    }

    /// The action `name`, its arguments from the words where they are said outright, the
    /// others chosen by the model (enums by calibrated likelihood, the rest decoded under
    /// the command's grammar).
    fn act(
        &self,
        name: &str,
        transcript: &str,
        scene: Option<&Scene>,
        on_text: &mut impl FnMut(&str),
    ) -> Result<Action> {
        let mut pinned = said_arguments(&self.commands, name, transcript);
        let spec = &self.commands.specs[name];
        let enums_left = spec
            .parameters
            .iter()
            .any(|(p, s)| !s.choices.is_empty() && !pinned.contains_key(p));
        let heard = |t| Utterance {
            transcript: t,
            facts: &[],
            scene,
        };
        let rows = UtteranceProjector.project(&heard(transcript), &self.llm)?;
        let (session, prompt) = self.actions.start(rows);
        if enums_left {
            let blank = UtteranceProjector.project(&heard("N/A"), &self.llm)?;
            let blank = self.actions.start(blank);
            let chosen = self.commands.choose_enums(
                &self.llm,
                name,
                (&session, &prompt),
                (&blank.0, &blank.1),
            )?;
            for (param, value) in chosen {
                pinned.entry(param).or_insert(value);
            }
        }
        let grammar = self
            .commands
            .grammar_for(name, &pinned)
            .context("routed to no command")?;
        let text = match grammar.only_string() {
            // Every argument is chosen: decoding could only write this.
            Some(text) => {
                on_text(&text);
                text
            }
            None => {
                let params = GenerateParams {
                    max_tokens: self.config.max_tokens,
                    sampling: SamplingParams::default(),
                    stop: Vec::new(),
                };
                let mut session = session;
                self.llm
                    .generate_constrained(&mut session, &prompt, &params, &grammar, |t| on_text(t))?
                    .text
            }
        };
        self.commands
            .parse(&text)?
            .context("the model wrote no action (cut short by the token limit?)")
    }
}

/// How close in meaning a part of a fact is to the question, when it was embedded.
pub type Closeness<'a> = &'a dyn Fn(&str) -> Option<f32>;

/// The part of a fact that answers the question. Of a fact of several sentences, the
/// sentence that gives the kind of answer `wanted` and best matches the question ("How
/// much is the car park?": the sentence with the prices, not the one that says where it
/// is). A list-like sentence ("Opening hours: Monday to Saturday ...; Sunday ...; ...": a
/// topic, or three clauses or more between semicolons) gives its best clause, after the
/// topic ("Opening hours: Sunday 10 am to 4 pm."), and a clause of three items or more its
/// best item; any other sentence is said whole.
///
/// "Best" is as the facts are ranked ([`Retrieval::by_meaning`]): by `close`, the parts'
/// similarity of meaning to the question, with the shared terms after ("which floor for
/// the heart doctor": cardiology's clause, which shares no word); by the rarest shared
/// terms alone where the parts were not embedded ([`FactIndex`]).
pub fn best_clause(fact: &str, question: &str, wanted: Wanted, close: Closeness) -> String {
    let all = grounding::sentences(fact);
    if all.len() < 2 {
        return best_in_sentence(fact, question, close);
    }
    let giving: Vec<&str> = all
        .iter()
        .copied()
        .filter(|s| asked::gives(s, wanted))
        .collect();
    let candidates = if giving.is_empty() { &all } else { &giving };
    best_in_sentence(best_part(candidates, question, close), question, close)
}

/// A list-like sentence's topic and clauses (see [`best_clause`]); `None` for a sentence
/// that is said whole.
fn clauses(sentence: &str) -> Option<(Option<&str>, Vec<&str>)> {
    let (topic, body) = match sentence.split_once(": ") {
        Some((t, b)) if t.split_whitespace().count() <= 3 => (Some(t), b),
        _ => (None, sentence),
    };
    let clauses: Vec<&str> = body.split("; ").collect();
    (clauses.len() >= 3 || (topic.is_some() && clauses.len() == 2)).then_some((topic, clauses))
}

/// The items of a clause that lists three or more ("adults 12 euros, children 5 euros,
/// students 8 euros"); `None` for any other clause.
fn items(clause: &str) -> Option<Vec<&str>> {
    let items: Vec<&str> = clause.split(", ").collect();
    (items.len() >= 3).then_some(items)
}

/// Every part of the facts that [`best_clause`] may choose among: the sentences of a fact
/// of several, the clauses of a list-like sentence, the items of a listing clause.
fn choosable_parts(facts: &[String]) -> Vec<&str> {
    let mut out = Vec::new();
    for fact in facts {
        let all = grounding::sentences(fact);
        for sentence in &all {
            if all.len() > 1 {
                out.push(*sentence);
            }
            for clause in clauses(sentence).map_or(Vec::new(), |(_, c)| c) {
                out.push(clause);
                out.extend(items(clause).unwrap_or_default());
            }
        }
    }
    out
}

/// The embeddings of the facts' choosable parts, with one pass over the encoder's weights.
fn embed_parts(encoder: &MiniLm, facts: &[String]) -> Result<HashMap<String, SentenceEmbedding>> {
    let mut parts = choosable_parts(facts);
    parts.sort_unstable();
    parts.dedup();
    let meanings = encoder.embed_all(&parts)?;
    Ok(parts.into_iter().map(str::to_owned).zip(meanings).collect())
}

/// The clause or item of one sentence that answers the question (see [`best_clause`]).
fn best_in_sentence(sentence: &str, question: &str, close: Closeness) -> String {
    let Some((topic, clauses)) = clauses(sentence) else {
        return grounding::one_sentence(sentence);
    };
    let best = best_part(&clauses, question, close);
    let best = match items(best) {
        Some(items) => best_part(&items, question, close),
        None => best,
    };
    let text = match topic {
        Some(t) => format!("{t}: {best}"),
        None => best.to_owned(),
    };
    grounding::one_sentence(&text)
}

/// The names in the facts, as terms: words the facts write with a capital and never
/// without ("Millford" opening a sentence is one, "Trains" is not), days of the week aside
/// (a day says when, and "Sunday" may be "weekends" in the fact).
fn names_of(facts: &[String]) -> BTreeSet<String> {
    let (mut capital, mut lower) = (BTreeSet::new(), BTreeSet::new());
    for word in facts.iter().flat_map(|f| f.split_whitespace()) {
        let set = match word.chars().find(|c| c.is_alphabetic()) {
            Some(c) if c.is_uppercase() => &mut capital,
            _ => &mut lower,
        };
        set.extend(terms(word));
    }
    capital
        .difference(&lower)
        .filter(|t| !t.ends_with("day"))
        .cloned()
        .collect()
}

/// The part that best matches the question (see [`best_clause`]; the first when none
/// does); a part that holds the day the question names comes first ("on Sundays": the
/// Sunday hours, not the clause about opening late).
fn best_part<'a>(parts: &[&'a str], question: &str, close: Closeness) -> &'a str {
    let on_the_day: Vec<&'a str> = on_the_day(parts, question)
        .into_iter()
        .map(|i| parts[i])
        .collect();
    let parts = if on_the_day.is_empty() {
        parts
    } else {
        &on_the_day[..]
    };
    let ranked = FactIndex::new(parts).rank(question);
    let similarities: Option<Vec<f32>> = parts.iter().map(|p| close(p)).collect();
    let ranked = match similarities {
        Some(s) => ranked.by_meaning(&s),
        None => ranked,
    };
    ranked.best().map_or(parts[0], |h| parts[h.fact])
}

/// The parts that hold a day the question names ("on Sundays"), by index.
fn on_the_day(parts: &[&str], question: &str) -> Vec<usize> {
    let days: Vec<String> = terms(question)
        .into_iter()
        .filter(|t| t.ends_with("day") && is_modifier(t))
        .collect();
    (0..parts.len())
        .filter(|&i| terms(parts[i]).iter().any(|t| days.contains(t)))
        .collect()
}

/// Words that point at what the camera sees ("what is this", "can you see me").
const LOOKING: &[&str] = &[
    "this", "these", "that", "those", "see", "seeing", "look", "looks", "looking", "camera",
    "view", "holding", "wearing", "front", "here's", "picture",
];

/// Whether an utterance is about what is in view: it points at it or names one of the
/// scene's labels. Only then do the labels go into the prompt: "Where is the cafe?" needs
/// none, and twenty label tokens are about 70 ms of prompt at two threads.
fn refers_to_view(transcript: &str, scene: &Scene) -> bool {
    let said = super::retrieval::words(transcript);
    let labels = scene
        .whole
        .labels
        .iter()
        .map(|l| l.name.as_str())
        .chain(scene.objects.iter().map(|o| o.label));
    said.iter().any(|w| LOOKING.contains(&w.as_str()))
        || labels
            .flat_map(super::retrieval::words)
            .any(|l| said.contains(&l))
}

/// The instructions; with commands, followed by their list and one action's JSON.
pub fn system_prompt(knowledge: &Knowledge, commands: &Commands) -> String {
    let Some((name, spec)) = commands.specs.iter().next() else {
        return knowledge.instructions.clone();
    };
    let args: Vec<String> = spec
        .parameters
        .iter()
        .map(|(param, p)| match p.choices.first() {
            Some(c) => format!("\"{param}\": \"{c}\""),
            None if p.kind == ParamType::Integer => format!("\"{param}\": 1"),
            None => format!("\"{param}\": \"...\""),
        })
        .collect();
    format!(
        "{}\n\nThe kiosk can also do these actions:\n{}\nTo do one, reply with only its JSON, \
         for example: {{\"action\": \"{name}\", \"args\": {{{}}}}}",
        knowledge.instructions.trim(),
        commands.describe(),
        args.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scene_goes_in_only_when_the_words_are_about_it() {
        let label = |name: &str| encoders::vision::Label {
            class: 0,
            name: name.into(),
            prob: 0.9,
        };
        let scene = Scene {
            whole: encoders::vision::View {
                labels: vec![label("umbrella"), label("space shuttle")],
                probs: Vec::new(),
                feature: Vec::new(),
            },
            regions: Vec::new(),
            objects: Vec::new(),
        };
        assert!(!refers_to_view("Where is the cafe?", &scene));
        assert!(!refers_to_view(
            "Show me the map of the second floor.",
            &scene
        ));
        assert!(refers_to_view("What is this?", &scene));
        assert!(refers_to_view("Is my umbrella allowed inside?", &scene));
    }

    #[test]
    fn the_best_clause_answers_the_question_asked() {
        let hours = "Opening hours: Monday to Saturday 9 am to 6 pm; Sunday 10 am to 4 pm; \
                     open late until 9 pm on Fridays.";
        assert_eq!(
            best_clause(
                hours,
                "What time do you open on Sunday?",
                Wanted::Time,
                &|_| None
            ),
            "Opening hours: Sunday 10 am to 4 pm."
        );
        let tickets = "Tickets: adults 12 euros, children 5 euros, students 8 euros; under 4 free.";
        assert_eq!(
            best_clause(
                tickets,
                "How much is a ticket for a child?",
                Wanted::Price,
                &|_| None
            ),
            "Tickets: children 5 euros."
        );
        assert_eq!(
            best_clause(
                "The cafe is on the ground floor.",
                "Where is the cafe?",
                Wanted::Place,
                &|_| None
            ),
            "The cafe is on the ground floor."
        );
        let parking = "The visitor car park is P2, on Hospital Road. Parking costs 2 euros \
                       for the first hour. Disabled bays are free.";
        assert_eq!(
            best_clause(
                parking,
                "how much does the car park cost",
                Wanted::Price,
                &|_| None
            ),
            "Parking costs 2 euros for the first hour."
        );
        assert_eq!(
            best_clause(parking, "where is the car park", Wanted::Place, &|_| None),
            "The visitor car park is P2, on Hospital Road."
        );
        // Meaning decides where the words do not: no clause says "heart".
        let clinics = "Cardiology is on the first floor; the eye clinic is on the second \
                       floor; dermatology is on the third floor.";
        let close = |part: &str| {
            Some(if part.starts_with("Cardiology") {
                0.6
            } else {
                0.2
            })
        };
        assert_eq!(
            best_clause(
                clinics,
                "which floor for the heart doctor",
                Wanted::Place,
                &close
            ),
            "Cardiology is on the first floor."
        );
    }
}
