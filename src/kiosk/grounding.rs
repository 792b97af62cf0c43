//! Checks of a generated answer against the facts it was given: what it claims must be in
//! them, its figures all there, and a yes or no must agree with them.
//!
//! A claim is what a visitor would act on and a small model invents most readily: a number
//! (a price, a time, a platform), a number word, a floor or level, and a name (a word with a
//! capital letter that does not open the sentence). The question does not count as support:
//! asked for the train to Westhaven, "Trains to Westhaven leave from platform 2" names a
//! town that no fact holds. The other words may come from the question too ("you can bring
//! your dog"), but not from nowhere: a content word in neither is the model's own
//! ("The facts are that ...", "the car park is a luxury"). And an answer must carry every
//! figure of the part of the fact it answers from, or it says less than the fact.

use super::retrieval::{DAYS, terms, words};

/// Words that state a place, a time or an amount without digits (and the [`DAYS`]).
const CLAIM_WORDS: &[&str] = &[
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "noon", "midnight", "ground", "first", "second", "third", "fourth", "fifth", "sixth",
    "seventh", "basement", "upper", "lower", "top", "free", "weekend", "weekends", "east", "west",
    "north", "south",
];

/// Words that make a sentence say no.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "cannot", "can't", "isn't", "aren't", "don't", "doesn't",
    "won't", "nor", "without",
];

/// Words that open a yes/no question.
const YES_NO_OPENERS: &[&str] = &[
    "is", "are", "can", "could", "do", "does", "may", "will", "would", "should", "am", "was",
    "were", "have", "has",
];

/// Why an answer was not kept.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "problem", content = "words")]
pub enum Unsupported {
    /// Claims that no given fact holds.
    Claims(Vec<String>),
    /// Content words that neither the facts nor the question hold: the model's own
    /// additions ("The car park is a luxury", "The facts are that ...").
    Unfounded(Vec<String>),
    /// Figures of the answering fact that the answer leaves out ("open late on Fridays"
    /// where the fact says until 9 pm).
    Incomplete(Vec<String>),
    /// A yes where the fact says no, or the other way round.
    Polarity,
    /// Nothing left once cut to one sentence.
    Empty,
    /// No content word in common with the facts: it is about something else ("The kiosk
    /// can also do this action:").
    OffTopic,
    /// The fact gives a time, place or amount and the answer none ("The guest wants to
    /// know what time breakfast is served.").
    NoAnswer,
}

/// The sentences of a text, trimmed: each ends at a stop followed by white space or the
/// end ("room 1.14" and "9.50 euros" end none).
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let ends =
            matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|(_, n)| n.is_whitespace());
        if ends {
            let s = text[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + c.len_utf8();
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// The first sentence of a text, its repeated clauses dropped ("The cafe is on the ground
/// floor, the cafe is on the ground floor." is one clause), closed with its stop.
pub fn one_sentence(text: &str) -> String {
    let sentence = sentences(text).into_iter().next().unwrap_or_default();
    let stop = sentence
        .chars()
        .last()
        .filter(|c| matches!(c, '.' | '!' | '?'));
    let body = sentence.trim_end_matches(['.', '!', '?']);
    // A clause whose content words an earlier one already holds adds nothing ("on the east
    // wing, in the east wing").
    let mut kept: Vec<&str> = Vec::new();
    for clause in body.split(", ") {
        let key = clause.trim().to_lowercase();
        let said = terms(clause);
        let repeats = kept.iter().any(|k| {
            k.trim().to_lowercase() == key || {
                let before = terms(k);
                !said.is_empty() && said.iter().all(|t| before.contains(t))
            }
        });
        if !key.is_empty() && !repeats {
            kept.push(clause);
        }
    }
    let mut out = kept.join(", ");
    if !out.is_empty() {
        out.push(stop.unwrap_or('.'));
    }
    out
}

/// A text's tokens stripped of punctuation, each with whether it is written as a name: a
/// capitalised word that does not open a sentence, other than "I" and its contractions.
fn tokens(text: &str) -> Vec<(&str, bool)> {
    let mut out = Vec::new();
    let mut opening = true;
    for token in text.split_whitespace() {
        let bare = token.trim_matches(|c: char| !c.is_alphanumeric());
        if bare.is_empty() {
            continue;
        }
        let capital = bare.chars().next().is_some_and(char::is_uppercase);
        // "I", "I'm", "I'll" are no names.
        let me = bare == "I" || bare.starts_with("I'");
        out.push((bare, capital && !opening && !me));
        opening = token.ends_with(['.', '!', '?', ':']);
    }
    out
}

/// The claims of an answer, lower-cased.
pub fn claims(answer: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (bare, name) in tokens(answer) {
        for w in words(bare) {
            let number = w.starts_with(|c: char| c.is_ascii_digit());
            if number || name || CLAIM_WORDS.contains(&w.as_str()) || DAYS.contains(&w.as_str()) {
                out.push(w);
            }
        }
    }
    out
}

/// The names in a text (capitalised words that do not open a sentence, "I'm" not among
/// them), lower-cased.
pub fn names(text: &str) -> Vec<String> {
    tokens(text)
        .into_iter()
        .filter(|(_, name)| *name)
        .flat_map(|(bare, _)| words(bare))
        .collect()
}

/// Whether a text says no.
fn negative(text: &str) -> bool {
    words(text).iter().any(|w| NEGATIONS.contains(&w.as_str()))
}

/// Whether an answer may be said: every claim in the facts' words, and for a yes/no
/// question a yes or no that agrees with the first fact.
/// `venue` is the kiosk's name: the answer may name it ("The City Museum opens ...").
pub fn check(answer: &str, question: &str, facts: &[&str], venue: &str) -> Result<(), Unsupported> {
    if answer.trim().is_empty() {
        return Err(Unsupported::Empty);
    }
    let known: Vec<String> = facts
        .iter()
        .chain([&venue])
        .flat_map(|f| words(f))
        .collect();
    // "9.50" may be said as "9.50" or "9,50"; "6:30" as "6:30"; a word in a fact's
    // compound ("Belvedere-Guest") counts.
    let holds = |claim: &str| {
        known
            .iter()
            .any(|k| k == claim || k.split(['-', '.', ':']).any(|part| part == claim))
            || claim.parse::<f64>().is_ok_and(|v| {
                known
                    .iter()
                    .any(|k| k.parse::<f64>().is_ok_and(|kv| kv == v))
            })
    };
    // The venue's own name is no claim, nor an answer ("... at the Hotel Belvedere.").
    let own = words(venue);
    let said: Vec<String> = claims(answer)
        .into_iter()
        .filter(|c| !own.contains(c))
        .collect();
    if answer.trim_end().ends_with('?') {
        return Err(Unsupported::NoAnswer);
    }
    let missing: Vec<String> = said.iter().filter(|c| !holds(c)).cloned().collect();
    if !missing.is_empty() {
        return Err(Unsupported::Claims(missing));
    }
    // The figures of the answering fact are what the visitor came for: an answer that
    // drops one ("The museum is open on Sunday at 10 am" of "Sunday 10 am to 4 pm") is
    // not all the fact says.
    let figures = |text: &str| -> Vec<String> {
        claims(text)
            .into_iter()
            .filter(|c| c.starts_with(|ch: char| ch.is_ascii_digit()))
            .collect()
    };
    let given = figures(answer);
    let left_out: Vec<String> = facts.first().map_or(Vec::new(), |f| {
        figures(f)
            .into_iter()
            .filter(|c| !given.contains(c))
            .collect()
    });
    if !left_out.is_empty() {
        return Err(Unsupported::Incomplete(left_out));
    }
    // Every content word must come from the facts or the question: a 135M model fills in
    // with words of its own, and what they say no fact backs.
    let held: Vec<String> = facts
        .iter()
        .chain([&question, &venue])
        .flat_map(|f| terms(f))
        .collect();
    let unfounded: Vec<String> = terms(answer)
        .into_iter()
        .filter(|t| !held.contains(t))
        .collect();
    if !unfounded.is_empty() {
        return Err(Unsupported::Unfounded(unfounded));
    }
    let topics: Vec<String> = facts.iter().flat_map(|f| terms(f)).collect();
    if !terms(answer).iter().any(|t| topics.contains(t)) {
        return Err(Unsupported::OffTopic);
    }
    if said.is_empty() && facts.first().is_some_and(|f| !claims(f).is_empty()) {
        return Err(Unsupported::NoAnswer);
    }
    let asks_yes_no = words(question)
        .iter()
        .find(|w| !matches!(w.as_str(), "excuse" | "me" | "sorry" | "so" | "and" | "hi"))
        .is_some_and(|w| YES_NO_OPENERS.contains(&w.as_str()));
    if asks_yes_no && let Some(fact) = facts.first() {
        // "The trains to Eastwick are running" where the fact says there are none.
        if negative(answer) != negative(fact) {
            return Err(Unsupported::Polarity);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sentence_keeps_the_first_and_drops_repeats() {
        assert_eq!(
            one_sentence("The cafe is on the ground floor. The dinosaur exhibit is upstairs."),
            "The cafe is on the ground floor."
        );
        assert_eq!(
            one_sentence("It costs 9.50 euros, it costs 9.50 euros, and more"),
            "It costs 9.50 euros, and more."
        );
        assert_eq!(
            one_sentence("The dinosaur exhibit is on the east wing, in the east wing."),
            "The dinosaur exhibit is on the east wing."
        );
        assert_eq!(one_sentence("  "), "");
    }

    #[test]
    fn names_are_capitalised_words_inside_a_sentence() {
        assert_eq!(
            names("Which platform does the train to Westhaven leave from? And Lakeside?"),
            ["westhaven", "lakeside"]
        );
        assert!(names("I'm looking for the loo. Where is it?").is_empty());
    }

    #[test]
    fn words_of_the_models_own_are_caught() {
        let facts = ["Parking costs 2 euros for the first hour."];
        assert_eq!(
            check(
                "The car park is a luxury, at 2 euros for the first hour.",
                "how much is the car park",
                &facts,
                "St Brigid's Hospital"
            ),
            Err(Unsupported::Unfounded(vec!["luxury".into()]))
        );
        assert!(
            check(
                "The car park costs 2 euros for the first hour.",
                "how much is the car park",
                &facts,
                "St Brigid's Hospital"
            )
            .is_ok()
        );
    }

    #[test]
    fn an_answer_that_drops_a_figure_is_incomplete() {
        let facts = ["Opening hours: Sunday 10 am to 4 pm."];
        assert_eq!(
            check(
                "The museum is open on Sunday at 10 am.",
                "What time does the museum open on Sunday?",
                &facts,
                "City Museum"
            ),
            Err(Unsupported::Incomplete(vec!["4".into()]))
        );
    }

    #[test]
    fn claims_are_numbers_places_and_names() {
        assert_eq!(
            claims("Trains to Westhaven leave from platform 2 at 6:30, on the first floor."),
            ["westhaven", "2", "6:30", "first"]
        );
        assert!(claims("The cafe is next to the entrance.").is_empty());
    }

    #[test]
    fn an_invented_number_name_or_yes_is_caught() {
        let facts = ["Our guest wifi network is called Belvedere-Guest."];
        assert_eq!(
            check(
                "The wifi password is 123456.",
                "What's the wifi password?",
                &facts,
                "Hotel Belvedere"
            ),
            Err(Unsupported::Claims(vec!["123456".into()]))
        );
        assert!(
            check(
                "The network is Belvedere-Guest.",
                "What is the wifi?",
                &facts,
                "Hotel Belvedere"
            )
            .is_ok()
        );
        let facts = ["Pets are not allowed, except guide dogs."];
        assert_eq!(
            check(
                "Yes, you can bring your dog.",
                "Can I bring my dog?",
                &facts,
                "Hotel Belvedere"
            ),
            Err(Unsupported::Polarity)
        );
        assert!(
            check(
                "No, pets are not allowed.",
                "Can I bring my dog?",
                &facts,
                "Hotel Belvedere"
            )
            .is_ok()
        );
        let facts = ["Trains to Northbridge leave from platform 2."];
        assert!(
            check(
                "Platform 2.",
                "Where do trains to Northbridge leave from?",
                &facts,
                "Hotel Belvedere"
            )
            .is_ok()
        );
        assert!(
            check(
                "Platform 5.",
                "Where do trains to Northbridge leave from?",
                &facts,
                "Hotel Belvedere"
            )
            .is_err()
        );
        assert!(
            check(
                "Trains to Westhaven use platform 2.",
                "Westhaven?",
                &facts,
                "Hotel Belvedere"
            )
            .is_err()
        );
        assert_eq!(
            check(
                "The kiosk can do this, platform 2.",
                "Which platform for Northbridge?",
                &facts,
                "Hotel Belvedere"
            ),
            Err(Unsupported::Unfounded(vec!["kiosk".into()]))
        );
        assert_eq!(
            check(
                "Trains leave from a platform.",
                "Which platform for Northbridge?",
                &facts,
                "Hotel Belvedere"
            ),
            Err(Unsupported::Incomplete(vec!["2".into()]))
        );
        assert_eq!(
            check(
                "The cafe is on a floor.",
                "Where is the cafe?",
                &["The cafe is on the ground floor."],
                "Hotel Belvedere"
            ),
            Err(Unsupported::NoAnswer)
        );
    }
}
