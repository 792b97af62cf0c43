//! Whether an utterance asks for anything, and if so for an action or for information.
//!
//! Three pieces of evidence, cheapest first, all kept in the [`Decision`]:
//! 1. Its form ([`form`]): a question, an imperative, a wish ("I need ...") or a plain
//!    statement. A statement (prose read aloud, small talk, thanks, Whisper's "you" on
//!    silence) is no request: it gets neither an action nor an answer. A 135M model's
//!    likelihoods alone sent "He might even have been made amiable himself." to
//!    `set_language`.
//!    A question that opens with a question word and holds no imperative or request
//!    ([`only_asks_to_know`]: "which floor is the maternity ward on") is answered, never
//!    acted on: its likelihood under `show_map` was 5 nats above the questions'.
//! 2. Anchors: the commands that share a content word (stemmed, synonyms folded, the
//!    kiosk's own name left out) with the utterance. Only those are scored; a request
//!    that anchors none is a question, with no model call.
//! 3. Likelihood ([`Router`]): which hypothesis about the visitor explains the words best.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use llm::{Llm, LlmError, Segment, Session, TokenId};
use serde::Serialize;

use super::actions::{Commands, ParamType};
use super::retrieval::{terms, words};

/// How an utterance is put, as far as asking goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// "Where is the cafe?"
    Question,
    /// A question that asks the kiosk to do something: "Can you switch the screen to
    /// French?", "Could you ring the front desk?", "Can I see the departures?".
    Request,
    /// "Show me the map", "Auf Deutsch, bitte."
    Imperative,
    /// "I need someone to help me", "I'm looking for the loo."
    Wish,
    /// Anything else: no request.
    Statement,
}

impl Form {
    pub fn is_request(self) -> bool {
        self != Form::Statement
    }
}

/// Words that open a question.
const QUESTION_OPENERS: &[&str] = &[
    "what", "what's", "where", "where's", "when", "how", "how's", "who", "who's", "which", "why",
    "whose", "is", "are", "am", "was", "were", "can", "could", "do", "does", "did", "will",
    "would", "may", "should", "shall", "have", "has", "any", "anywhere", "when's",
];
/// Words a visitor opens with before the request itself.
const OPENERS: &[&str] = &[
    "excuse", "me", "sorry", "hi", "hello", "hey", "so", "and", "um", "uh", "er", "oh", "well",
    "ok", "okay", "right", "yes", "please", "then", "now",
];
/// Verbs a request to the kiosk starts with.
const IMPERATIVES: &[&str] = &[
    "show", "call", "switch", "change", "put", "set", "open", "book", "order", "get", "give",
    "take", "bring", "print", "display", "help", "find", "ring", "send", "turn", "make", "let",
    "tell", "guide", "page", "contact", "go", "display", "list",
];
/// "Please" in the kiosks' languages: a request whatever its words.
const PLEASE: &[&str] = &[
    "please",
    "bitte",
    "plaît",
    "plait",
    "favor",
    "favore",
    "proszę",
    "alstublieft",
];
/// What a wish says of its speaker, and the verbs of wanting.
const FIRST_PERSON: &[&str] = &["i", "i'm", "i'd", "we", "we're", "we'd", "me", "us", "my"];
const WANTING: &[&str] = &["need", "want", "wanna", "like", "looking", "must", "needs"];
/// "Can I see ...", "Can I have ...": asking to be shown or given something.
const ASKING_TO_HAVE: &[&str] = &["see", "have", "get", "look", "speak", "talk"];
/// "What a lovely day." opens like a question and is none.
const EXCLAIMING: &[&str] = &[
    "a",
    "an",
    "lovely",
    "nice",
    "beautiful",
    "wonderful",
    "great",
    "amazing",
];

/// Auxiliaries that open a question or follow its question word ("where do", "is there").
const AUXILIARIES: &[&str] = &[
    "is", "are", "am", "was", "were", "do", "does", "did", "can", "could", "will", "would",
    "should", "shall", "may", "have", "has",
];
/// Question words.
const WH: &[&str] = &["what", "where", "when", "how", "which", "who", "why"];

/// The form of an utterance, from its words and its closing punctuation (Whisper writes a
/// question mark for most questions, but not for all: "is the museum open late on Friday
/// evening." came back from it for a spoken question). A remark may come first: "my son
/// wants to see the dinosaurs, where do we go" asks, and so does "I'm in a wheelchair, can
/// you send someone?" (a request).
pub fn form(text: &str) -> Form {
    let whole = first_clause_form(text);
    let later = text
        .split(CLAUSE_ENDS)
        .skip(1)
        .filter_map(asked_in_clause)
        .last();
    match (whole, later) {
        (Form::Statement | Form::Wish, Some(f)) => f,
        (Form::Question, Some(Form::Request)) => Form::Request,
        _ => whole,
    }
}

/// The part of `text` that asks: from the last clause shaped as a question or request
/// when the first is a remark ("my son wants to see the t-rex, where do we go" asks
/// "where do we go"), else the whole text. The remark is context for finding the fact; the
/// question is what must be answered.
pub fn asked_part(text: &str) -> &str {
    // The first clause with more than greetings ("hello, could you tell me ...").
    let first = text
        .split(CLAUSE_ENDS)
        .find(|c| words(c).iter().any(|w| !OPENERS.contains(&w.as_str())))
        .unwrap_or(text);
    if matches!(first_clause_form(first), Form::Question | Form::Request) {
        return text;
    }
    let mut at = None;
    let mut start = 0;
    for clause in text.split_inclusive(CLAUSE_ENDS) {
        if start > 0 && asked_in_clause(clause).is_some() {
            at = Some(start);
        }
        start += clause.len();
    }
    at.map_or(text, |i| text[i..].trim_start())
}

/// Whether the last words of an utterance are a question tag: "okay?", "right?".
fn is_tag(tail: &str) -> bool {
    let ws = words(tail);
    !ws.is_empty()
        && ws.len() <= 2
        && ws.iter().all(|w| {
            matches!(
                w.as_str(),
                "okay" | "ok" | "right" | "yeah" | "alright" | "yes" | "no" | "eh" | "huh" | "all"
            )
        })
}

/// Who a request is put to: the kiosk, or whoever is there ("could someone bring a
/// wheelchair").
const ADDRESSED: &[&str] = &["you", "someone", "somebody", "anyone", "anybody"];

/// Whether words ask indirectly: "I was wondering when you do the lessons", "I wonder if
/// the pool is open".
fn wonders(ws: &[&str]) -> bool {
    ws.windows(2).any(|p| {
        matches!(p[0], "wonder" | "wondering" | "wondered")
            && (WH.contains(&p[1]) || matches!(p[1], "if" | "whether"))
    })
}

/// Whether an utterance asks only to be told something: it opens with a question word and
/// no later clause tells or asks the kiosk to do anything ("which floor is the maternity
/// ward on" wants a floor, not the map; "when are the next ones to Millford, put them up
/// for me" wants the screen). Its answer is words, whatever the likelihoods say.
pub fn only_asks_to_know(text: &str) -> bool {
    let clauses: Vec<&str> = text
        .split(CLAUSE_ENDS)
        .filter(|c| !words(c).is_empty())
        .collect();
    let opening = |clause: &str| {
        words(clause)
            .into_iter()
            .find(|w| !OPENERS.contains(&w.as_str()))
            .unwrap_or_default()
    };
    let is_wh = |w: &str| WH.contains(&w.strip_suffix("'s").unwrap_or(w));
    // The clause that asks: the first opening with a question word or an auxiliary.
    let Some(asking) = clauses.iter().position(|c| {
        let o = opening(c);
        is_wh(&o) || AUXILIARIES.contains(&o.as_str())
    }) else {
        return false;
    };
    is_wh(&opening(clauses[asking]))
        && !clauses.iter().enumerate().any(|(i, c)| {
            i != asking
                && (IMPERATIVES.contains(&opening(c).as_str())
                    || asked_in_clause(c) == Some(Form::Request))
        })
}

/// What ends a clause: a remark before the question may end with a comma or a stop ("My
/// mum uses a wheelchair. Where do we go?").
const CLAUSE_ENDS: [char; 5] = [',', ';', '.', '?', '!'];

/// Question words that open a question in the middle of unpunctuated speech ("i dropped my
/// keys yesterday where would they end up"); "who" and "which" are left out, being as
/// often relative ("the student who did our tour").
const MID_WH: &[&str] = &["what", "where", "when", "how"];

/// Subjects after an inverted auxiliary: "where would they", "when does the".
const SUBJECTS: &[&str] = &[
    "i", "you", "we", "they", "he", "she", "it", "the", "my", "our", "your", "this", "there",
];

/// Whether words hold a question in inverted order: a question word, an auxiliary and its
/// subject ("where would they end up"), or "how late can", "how much does".
fn inverted_question(ws: &[&str]) -> bool {
    ws.windows(3).any(|t| {
        MID_WH.contains(&t[0])
            && ((AUXILIARIES.contains(&t[1]) && SUBJECTS.contains(&t[2]))
                || (matches!(t[1], "much" | "many" | "long" | "late" | "early" | "far")
                    && AUXILIARIES.contains(&t[2])))
    })
}

/// Prepositions that may come before a question word in a clause.
const LEADING_PREPOSITIONS: &[&str] = &["by", "until", "till", "at", "from", "on", "to", "for"];

/// The form of a clause after the first when it is shaped as a question (a question word
/// and an auxiliary, "when's", "how much", or an auxiliary and its subject) or as a request
/// ("can you ..."); a clause such as "when the train came" is neither.
fn asked_in_clause(clause: &str) -> Option<Form> {
    let all = words(clause);
    let ws: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .skip_while(|w| OPENERS.contains(w))
        .collect();
    // A preposition may lead the question word: "by what time", "from which platform".
    let ws = match ws.as_slice() {
        [p, wh, rest @ ..] if LEADING_PREPOSITIONS.contains(p) && WH.contains(wh) => {
            let mut v = vec![*wh];
            v.extend_from_slice(rest);
            v
        }
        _ => ws,
    };
    let (first, second) = (*ws.first()?, ws.get(1).copied().unwrap_or(""));
    let third = ws.get(2).copied().unwrap_or("");
    if matches!(first, "can" | "could" | "would" | "will")
        && (ADDRESSED.contains(&second) || (second == "i" && ASKING_TO_HAVE.contains(&third)))
    {
        return Some(Form::Request);
    }
    if wonders(&ws) {
        return Some(Form::Question);
    }
    let wh_contracted = first.strip_suffix("'s").is_some_and(|w| WH.contains(&w));
    // "where do", "how much", and a question word with its noun: "which floor do I need".
    let wh_asks = WH.contains(&first)
        && (AUXILIARIES.contains(&second)
            || AUXILIARIES.contains(&third)
            || matches!(
                second,
                "time" | "much" | "many" | "long" | "far" | "late" | "early"
            ));
    let aux_asks = AUXILIARIES.contains(&first)
        && matches!(
            second,
            "you"
                | "i"
                | "we"
                | "there"
                | "it"
                | "they"
                | "the"
                | "my"
                | "he"
                | "she"
                | "this"
                | "our"
                | "your"
        );
    (wh_contracted || wh_asks || aux_asks).then_some(Form::Question)
}

/// [`form`] from the opening words and the closing punctuation alone.
fn first_clause_form(text: &str) -> Form {
    let all = words(text);
    let mut ws = all.as_slice();
    while let [first, rest @ ..] = ws {
        if OPENERS.contains(&first.as_str()) && !rest.is_empty() {
            ws = rest;
        } else {
            break;
        }
    }
    let Some(first) = ws.first() else {
        return Form::Statement;
    };
    // A tag ("I'll meet you in the cafe, okay?") puts a question mark on a statement.
    let untagged = match text.trim_end().rsplit_once(',') {
        Some((head, tag)) if is_tag(tag) => head,
        _ => text,
    };
    let closing = untagged.trim_end().chars().last();
    let exclaims = ws.get(1).is_some_and(|w| EXCLAIMING.contains(&w.as_str()))
        && matches!(first.as_str(), "what" | "how");
    // Without closing punctuation (a transcript cut short, typed shorthand) a question word
    // near the start still asks: "until when is the pool open".
    let unpunctuated = !matches!(closing, Some('.' | '!' | '?'));
    // The question word opens its clause, after a preposition at most ("until when");
    // after a noun it is relative ("the student who did our tour").
    let asks_near_start = unpunctuated
        && ws
            .iter()
            .take(3)
            .position(|w| WH.contains(&w.as_str()) && w != "why")
            .is_some_and(|p| {
                ws[..p]
                    .iter()
                    .all(|w| LEADING_PREPOSITIONS.contains(&w.as_str()))
            });
    let plain: Vec<&str> = ws.iter().map(String::as_str).collect();
    let inverted = (unpunctuated || closing == Some('?')) && inverted_question(&plain);
    if closing == Some('?')
        || (QUESTION_OPENERS.contains(&first.as_str()) && !exclaims)
        || asks_near_start
        || inverted
    {
        let second = ws.get(1).map_or("", String::as_str);
        let third = ws.get(2).map_or("", String::as_str);
        let asks_to_do = matches!(first.as_str(), "can" | "could" | "would" | "will")
            && (ADDRESSED.contains(&second) || (second == "i" && ASKING_TO_HAVE.contains(&third)));
        return if asks_to_do {
            Form::Request
        } else {
            Form::Question
        };
    }
    if wonders(&plain) {
        return Form::Question;
    }
    if IMPERATIVES.contains(&first.as_str()) || all.iter().any(|w| PLEASE.contains(&w.as_str())) {
        return Form::Imperative;
    }
    let me = all.iter().any(|w| FIRST_PERSON.contains(&w.as_str()));
    let wants = all.iter().any(|w| WANTING.contains(&w.as_str()))
        || text.to_lowercase().contains("have to");
    if me && wants {
        return Form::Wish;
    }
    Form::Statement
}

/// What an utterance asks for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "command")]
pub enum Route {
    /// Not a request: no action, no answer.
    Talk,
    Question,
    Command(String),
}

/// A routing decision and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub route: Route,
    pub form: Form,
    /// The commands that share a word with the utterance (only they were scored).
    pub anchored: Vec<String>,
    /// `ln P(words | best command) - ln P(words | best question hypothesis)`, nats; none
    /// when no command was scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<f32>,
    /// A question that only asks to be told something ([`only_asks_to_know`]): answered
    /// without scoring the commands.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub only_asks_to_know: bool,
}

impl Decision {
    /// The decision for a kiosk with no commands, or for words that ask for nothing: talk,
    /// or a question, by the form alone.
    pub fn without_commands(transcript: &str) -> Self {
        let form = form(transcript);
        Decision {
            route: if form.is_request() {
                Route::Question
            } else {
                Route::Talk
            },
            form,
            anchored: Vec::new(),
            margin: None,
            only_asks_to_know: false,
        }
    }
}

/// The words of each command that tie an utterance to it: its name's parts, description
/// and enum values, folded as retrieval folds them, without the kiosk's own name (every
/// question to the museum kiosk says "museum").
#[derive(Debug, Clone)]
pub struct Anchors {
    words: BTreeMap<String, BTreeSet<String>>,
    /// Each command's enum values, folded.
    values: BTreeMap<String, BTreeSet<String>>,
}

impl Anchors {
    pub fn new(commands: &Commands, kiosk: &str) -> Self {
        let own: BTreeSet<String> = terms(kiosk).into_iter().collect();
        let words = commands
            .specs
            .iter()
            .map(|(name, spec)| {
                let mut text = format!("{} {}", name.replace('_', " "), spec.description);
                for p in spec.parameters.values() {
                    text.extend(p.choices.iter().map(|c| format!(" {c}")));
                }
                let set = terms(&text)
                    .into_iter()
                    .filter(|t| !own.contains(t))
                    .collect();
                (name.clone(), set)
            })
            .collect();
        let values = commands
            .specs
            .iter()
            .map(|(name, spec)| {
                let all = spec.parameters.values().flat_map(|p| p.choices.iter());
                (name.clone(), all.flat_map(|c| terms(c)).collect())
            })
            .collect();
        Anchors { words, values }
    }

    /// Whether `text` names one of command `name`'s enum values ("in Italian").
    pub fn names_value(&self, name: &str, text: &str) -> bool {
        let said: BTreeSet<String> = terms(text).into_iter().collect();
        self.values.get(name).is_some_and(|v| !v.is_disjoint(&said))
    }

    /// The commands sharing a word with `text`.
    pub fn of(&self, text: &str) -> Vec<String> {
        let said: BTreeSet<String> = terms(text).into_iter().collect();
        self.words
            .iter()
            .filter(|(_, w)| !w.is_disjoint(&said))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Number words a visitor says for a count.
const NUMBERS: &[(&str, u32)] = &[
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("alone", 1),
    ("myself", 1),
    ("couple", 2),
];

/// The arguments the words name outright: an enum value said in the utterance (through
/// the same folding as retrieval: "Deutsch" is German), or, for an integer, the one count
/// said ("three people", "2 of us", "just me"). A value said ambiguously (two floors, two
/// counts) is left to the model.
pub fn said_arguments(commands: &Commands, name: &str, text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(spec) = commands.specs.get(name) else {
        return out;
    };
    let said: BTreeSet<String> = terms(text).into_iter().collect();
    let ws = words(text);
    for (param, p) in &spec.parameters {
        if !p.choices.is_empty() {
            let named: Vec<&String> = p
                .choices
                .iter()
                .filter(|c| terms(c).iter().all(|t| said.contains(t)) && !terms(c).is_empty())
                .collect();
            if let [one] = named.as_slice() {
                out.insert(param.clone(), (*one).clone());
            }
        } else if p.kind == ParamType::Integer {
            let mut counts: BTreeSet<u32> = ws
                .iter()
                .filter_map(|w| {
                    w.parse::<u32>()
                        .ok()
                        .or_else(|| NUMBERS.iter().find(|(n, _)| n == w).map(|(_, v)| *v))
                })
                .collect();
            if counts.is_empty() && text.to_lowercase().contains("just me") {
                counts.insert(1);
            }
            if let [one] = counts.iter().collect::<Vec<_>>().as_slice() {
                out.insert(param.clone(), one.to_string());
            }
        }
    }
    out
}

/// One explanation of an utterance: a command with some enum values, or a question.
struct Hypothesis {
    command: Option<String>,
    /// The hypothesis' text but its last token, already run through the model.
    session: Session,
    last: TokenId,
}

/// Decides whether an utterance asks for a command, by which hypothesis about the visitor
/// explains their words best: the language model's likelihood of the transcript after
/// `A visitor asks the KIOSK to DESCRIPTION: "` for each command, and after two question
/// hypotheses. A command wins when it beats the best question hypothesis by `margin` nats;
/// its arguments are then decoded under [`ActionGrammar`].
///
/// Why not let the model choose with its first token: a 135M model never starts an answer
/// with `{` however it is prompted (measured: P < 0.002 for commands and questions alike),
/// while the likelihoods separate them: on 18 different museum utterances (Whisper's
/// transcripts of the speech fixtures among them), the 8 commands by 4.5 to 15.5 nats, the
/// 10 questions by at most 2.0 (the kiosk's default margin is 3.5; `tests/kiosk.rs` checks
/// spoken ones end to end).
/// The same ranking does not pick enum values well (it prefers "English" for "switch to
/// French"); [`Commands::choose_enums`] does, from the other direction.
pub struct Router {
    hypotheses: Vec<Hypothesis>,
    margin: f32,
}

impl Router {
    pub fn new(llm: &Llm, commands: &Commands, kiosk: &str, margin: f32) -> Result<Self, LlmError> {
        let mut texts = Vec::new();
        for (name, spec) in &commands.specs {
            let mut d = spec.description.trim().to_owned();
            if let Some(first) = d.get(..1) {
                d.replace_range(..1, &first.to_lowercase());
            }
            texts.push((
                Some(name.clone()),
                format!("A visitor asks the {kiosk} to {d}: \""),
            ));
        }
        for question in ["a question", "for information"] {
            texts.push((None, format!("A visitor asks the {kiosk} {question}: \"")));
        }
        let mut hypotheses = Vec::new();
        for (command, text) in texts {
            let mut ids = llm.tokenizer.encode(&text, false)?;
            let last = ids.pop().ok_or(LlmError::EmptyPrompt)?;
            let mut session = Session::new();
            if !ids.is_empty() {
                llm.prefill(&mut session, &[Segment::Tokens(ids)])?;
            }
            hypotheses.push(Hypothesis {
                command,
                session,
                last,
            });
        }
        Ok(Router { hypotheses, margin })
    }

    /// The best of the `candidates` commands against the question hypotheses: its name and
    /// the margin in nats, or none when there is no candidate.
    pub fn route(
        &self,
        llm: &Llm,
        transcript: &str,
        candidates: &[String],
    ) -> Result<Option<(Option<String>, f32)>, LlmError> {
        if candidates.is_empty() {
            return Ok(None);
        }
        let words = llm
            .tokenizer
            .encode(&format!("{}\"", transcript.trim()), false)?;
        let mut best_command = (f32::NEG_INFINITY, None);
        let mut best_question = f32::NEG_INFINITY;
        for h in &self.hypotheses {
            if h.command.as_ref().is_some_and(|c| !candidates.contains(c)) {
                continue;
            }
            let mut session = h.session.clone();
            let ll = llm.log_likelihood(&mut session, &[Segment::Tokens(vec![h.last])], &words)?;
            match &h.command {
                Some(c) if ll > best_command.0 => best_command = (ll, Some(c)),
                Some(_) => {}
                None => best_question = best_question.max(ll),
            }
        }
        let margin = best_command.0 - best_question;
        Ok(Some((best_command.1.cloned(), margin)))
    }

    /// The margin a command needs over the questions, by how the words are put: an
    /// information question must be explained far better by the command (its likelihood
    /// favours commands for any words close to a command's description: "Which platform
    /// for Northbridge?" names a destination of `show_departures`), an imperative or a
    /// polite request only better.
    fn needed(&self, form: Form) -> f32 {
        match form {
            Form::Question => self.margin,
            Form::Wish => self.margin / 2.0,
            Form::Imperative | Form::Request | Form::Statement => 0.0,
        }
    }

    /// The whole decision: form, then anchors, then likelihood.
    pub fn decide(
        &self,
        llm: &Llm,
        anchors: &Anchors,
        transcript: &str,
    ) -> Result<Decision, LlmError> {
        let form = form(transcript);
        if !form.is_request() {
            return Ok(Decision::without_commands(transcript));
        }
        if form == Form::Question && only_asks_to_know(transcript) {
            return Ok(Decision {
                route: Route::Question,
                form,
                anchored: Vec::new(),
                margin: None,
                only_asks_to_know: true,
            });
        }
        let anchored = anchors.of(transcript);
        let scored = self.route(llm, transcript, &anchored)?;
        let route = match &scored {
            // A request that names one of the command's values asks for it, whatever the
            // likelihoods ("Can you show everything in Italian?" scored -1.0).
            Some((Some(name), margin))
                if *margin > self.needed(form)
                    || (matches!(form, Form::Imperative | Form::Request)
                        && anchors.names_value(name, transcript)) =>
            {
                Route::Command(name.clone())
            }
            _ => Route::Question,
        };
        Ok(Decision {
            route,
            form,
            anchored,
            margin: scored.map(|(_, m)| m),
            only_asks_to_know: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asked_part_is_the_question_after_a_remark() {
        assert_eq!(
            asked_part("my son wants to see the t-rex, where do we go"),
            "where do we go"
        );
        assert_eq!(
            asked_part(
                "hello, could you tell me please, we're coming on sunday, until what time are you open"
            ),
            "hello, could you tell me please, we're coming on sunday, until what time are you open"
        );
        assert_eq!(
            asked_part("It was late, when the train came."),
            "It was late, when the train came."
        );
        assert_eq!(asked_part("where is the cafe"), "where is the cafe");
        assert_eq!(
            asked_part("i mustn't eat before the test, by what time is the last meal"),
            "by what time is the last meal"
        );
        assert_eq!(
            asked_part("my boy wants to swim, is he old enough"),
            "is he old enough"
        );
    }

    #[test]
    fn a_question_after_a_remark_still_asks() {
        assert_eq!(
            form("my son wants to see the dinosaurs, where do we go"),
            Form::Question
        );
        assert_eq!(
            form("we have an early flight, when's the first bus to the airport"),
            Form::Question
        );
        assert_eq!(
            form("I'm in a wheelchair, can you send someone?"),
            Form::Request
        );
        assert_eq!(
            form("my son is six, i was wondering when you do the lessons"),
            Form::Question
        );
        assert_eq!(
            form("my wife can't walk far, would somebody be able to bring a wheelchair"),
            Form::Request
        );
        assert_eq!(form("when's the last train tonight"), Form::Question);
        assert_eq!(
            asked_part("i've got an appointment with the heart doctor, which floor do i need"),
            "which floor do i need"
        );
        assert!(only_asks_to_know("which floor is the maternity ward on"));
        assert!(only_asks_to_know(
            "My mum uses a wheelchair. Where do we go so someone can help her?"
        ));
        assert!(!only_asks_to_know(
            "where are all the gates, can I see a map"
        ));
        assert_eq!(
            form("i dropped my keys somewhere yesterday where would they end up"),
            Form::Question
        );
        assert_eq!(
            form("on a tuesday how late can I stay in the library"),
            Form::Question
        );
        assert_eq!(form("whats the wifi pasword"), Form::Question);
        assert_eq!(
            form("the student who did our tour on Saturday was lovely"),
            Form::Statement
        );
        assert_eq!(form("I know where the cafe is."), Form::Statement);
        assert!(!only_asks_to_know(
            "when are the next ones to millford, put them up for me"
        ));
        assert!(!only_asks_to_know(
            "What's leaving for Millford soon? Show me on the screen."
        ));
        assert!(!only_asks_to_know("can you show me the map"));
        // A clause that opens with a question word but does not ask.
        assert_eq!(form("It was late, when the train came."), Form::Statement);
        assert_eq!(
            form("He might even have been made amiable himself."),
            Form::Statement
        );
        assert_eq!(form("Thank you, that's lovely."), Form::Statement);
        assert_eq!(
            form("I'll meet you in the cafe in ten minutes, okay?"),
            Form::Statement
        );
        assert_eq!(form("The cafe is upstairs, right?"), Form::Statement);
    }
}
