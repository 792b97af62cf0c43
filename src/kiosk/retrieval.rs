//! Which facts an utterance is about: BM25 (Robertson and Zaragoza 2009) over stemmed,
//! synonym-folded content words, and how much of the utterance the best fact covers.
//!
//! Only the best few facts go into the prompt, so the prompt's cost does not grow with the
//! knowledge file, and a small model is not tempted by the facts next to the right one
//! (with all of them in view it answered "where does the bus leave" with another fact's
//! place). Coverage, the share of the utterance's word weight (inverse document frequency)
//! that the fact holds, is the evidence for abstaining: a question about a wifi password
//! whose facts name only the network covers half its weight.

use std::collections::{BTreeMap, BTreeSet};

/// BM25's term-frequency saturation and length normalisation (the usual values).
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Words that carry no topic in a visitor's question.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "although",
    "though",
    "having",
    "am",
    "an",
    "and",
    "any",
    "anyone",
    "anything",
    "are",
    "as",
    "at",
    "be",
    "been",
    "bit",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "excuse",
    "for",
    "from",
    "get",
    "go",
    "going",
    "got",
    "had",
    "has",
    "have",
    "hello",
    "here",
    "hey",
    "hi",
    "how",
    "i",
    "i'd",
    "i'll",
    "i've",
    "we'd",
    "we'll",
    "we've",
    "you'd",
    "they'd",
    "let's",
    "i'm",
    "if",
    "in",
    "into",
    "is",
    "it",
    "it's",
    "its",
    "just",
    "know",
    "let",
    "like",
    "may",
    "me",
    "might",
    "much",
    "must",
    "my",
    "need",
    "of",
    "on",
    "one",
    "or",
    "our",
    "please",
    "right",
    "shall",
    "should",
    "so",
    "some",
    "tell",
    "than",
    "thank",
    "thanks",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "there's",
    "these",
    "they",
    "this",
    "those",
    "to",
    "up",
    "us",
    "want",
    "was",
    "we",
    "we're",
    "were",
    "what",
    "what's",
    "when",
    "where",
    "where's",
    "which",
    "who",
    "why",
    "will",
    "with",
    "would",
    "you",
    "you're",
    "your",
    "yes",
    "no",
    "not",
    "okay",
    "ok",
    "well",
    "very",
    "really",
    // What is asked for rather than what about: "what time", "the name of", "find".
    "time",
    "name",
    "find",
    "look",
    "looking",
    "located",
    "place",
    "way",
    "somewhere",
    "today",
    "now",
    "also",
    // Verbs that say how, not what: "catch a cab", "bring my dog", "take my bike".
    "take",
    "bring",
    "catch",
    "use",
    "see",
    "out",
    "there",
    "allowed",
    "allow",
    // Pronouns, connectives and placeholders: "is he ok", "while I wait", "any kind of".
    "he",
    "she",
    "him",
    "her",
    "his",
    "hers",
    "while",
    "without",
    "during",
    "kind",
    "sort",
    "sorry",
    "thing",
    "things",
    "stuff",
    "something",
    "anybody",
    "still",
    "yet",
];

/// Everyday words folded onto one form, so that "loo" finds the toilets and "cab" the taxi
/// rank. Each row: the form, then the words (already stemmed) that mean it.
const SYNONYMS: &[(&str, &[&str])] = &[
    (
        "toilet",
        &["loo", "restroom", "bathroom", "wc", "lavatory", "washroom"],
    ),
    ("cafe", &["coffee", "café", "cafeteria", "snack"]),
    (
        "price",
        &["cost", "fee", "charge", "pay", "euro", "expensive", "cheap"],
    ),
    (
        "child",
        &["kid", "children", "son", "daughter", "toddler", "year-old"],
    ),
    ("taxi", &["cab"]),
    ("bicycle", &["bike", "cycle"]),
    ("luggage", &["suitcase", "baggage", "bag", "locker"]),
    ("pool", &["swim", "swimming"]),
    ("fitness", &["gym", "workout"]),
    ("wifi", &["wi-fi", "internet", "wireless"]),
    ("open", &["opening", "hour", "close", "closing"]),
    ("leave", &["depart", "departure"]),
    (
        "staff",
        &[
            "someone",
            "somebody",
            "person",
            "employee",
            "assistant",
            "attendant",
        ],
    ),
    ("help", &["assist", "assistance"]),
    ("german", &["deutsch"]),
    ("french", &["français", "francais"]),
    ("spanish", &["español", "espanol"]),
    ("italian", &["italiano"]),
    ("dutch", &["nederlands"]),
    ("polish", &["polski"]),
    ("one-way", &["single"]),
];

/// Irregular plurals the suffix rules miss.
const IRREGULAR: &[(&str, &str)] = &[
    ("children", "child"),
    ("people", "person"),
    ("feet", "foot"),
    ("men", "man"),
    ("women", "woman"),
    ("left", "leave"),
];

/// A word reduced to its stem: a few of Porter's suffix rules, enough to fold plurals and
/// verb forms ("trains", "leaves", "opening", "booked") without a dictionary.
pub fn stem(word: &str) -> String {
    if let Some((_, s)) = IRREGULAR.iter().find(|(w, _)| *w == word) {
        return (*s).to_owned();
    }
    let w = word.trim_end_matches("'s");
    let n = w.chars().count();
    let strip = |suffix: &str| w[..w.len() - suffix.len()].to_owned();
    let undouble = |mut s: String| {
        let b = s.as_bytes();
        if b.len() > 2 && b[b.len() - 1] == b[b.len() - 2] && !b"aeioulsz".contains(&b[b.len() - 1])
        {
            s.pop();
        }
        s
    };
    if n > 4 && w.ends_with("ies") {
        return strip("ies") + "y";
    }
    if n > 4 && w.ends_with("sses") {
        return strip("es");
    }
    if n > 5 && w.ends_with("ing") {
        return undouble(strip("ing"));
    }
    if n > 4 && w.ends_with("ed") && !w.ends_with("eed") {
        return undouble(strip("ed"));
    }
    if n > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        return strip("s");
    }
    w.to_owned()
}

/// The folded form of one word: stemmed, then mapped through [`SYNONYMS`].
fn fold(word: &str) -> String {
    // "my three-year-old", "a 5-year-old"
    if word.ends_with("-year-old") || word.ends_with("-year-olds") {
        return "child".into();
    }
    let s = stem(word);
    SYNONYMS
        .iter()
        .find(|(_, words)| words.contains(&s.as_str()) || words.contains(&word))
        .map_or(s, |(form, _)| (*form).to_owned())
}

/// Contractions typed without their apostrophe ("whats the wifi", "im just dropping
/// off"), as they are written with it.
const UNAPOSTROPHED: &[(&str, &str)] = &[
    ("im", "i'm"),
    ("ive", "i've"),
    ("dont", "don't"),
    ("doesnt", "doesn't"),
    ("didnt", "didn't"),
    ("cant", "can't"),
    ("isnt", "isn't"),
    ("arent", "aren't"),
    ("wont", "won't"),
    ("whats", "what's"),
    ("wheres", "where's"),
    ("whens", "when's"),
    ("hows", "how's"),
    ("whos", "who's"),
    ("thats", "that's"),
    ("youre", "you're"),
    ("theyre", "they're"),
];

/// The words of a text, lower-cased; apostrophes and inner hyphens, dots and colons stay
/// ("i'm", "one-way", "9.50", "6:30"), and a contraction typed without its apostrophe gets
/// it back ("whats" is "what's").
pub fn words(text: &str) -> Vec<String> {
    let mut out = raw_words(text);
    for w in &mut out {
        if let Some((_, with)) = UNAPOSTROPHED.iter().find(|(bare, _)| bare == w) {
            *w = (*with).to_owned();
        }
    }
    out
}

fn raw_words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase().replace('’', "'");
    let mut out = Vec::new();
    let mut word = String::new();
    let chars: Vec<char> = lower.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_alnum = chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
        let inner = matches!(c, '\'' | '-' | '.' | ':') && !word.is_empty() && next_alnum;
        if c.is_alphanumeric() || inner {
            word.push(c);
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Words that narrow a question down rather than say what it is about: when ("tonight",
/// "on Saturday", "still", "later"), how much ("extra", "anywhere"), and the words that say
/// the kind of answer asked for. They weigh half in ranking ("the gym in the middle of the
/// night" is about the gym, not the fact that prices parking per night), and a fact need
/// not hold them to answer.
const MODIFIERS: &[&str] = &[
    "morning",
    "afternoon",
    "evening",
    "night",
    "tonight",
    "tomorrow",
    "yesterday",
    "today",
    "day",
    "days",
    "week",
    "weekend",
    "weekday",
    "month",
    "year",
    "hour",
    "minute",
    "moment",
    "late",
    "later",
    "early",
    "earlier",
    "last",
    "first",
    "next",
    "still",
    "already",
    "soon",
    "again",
    "middle",
    "o'clock",
    "usually",
    "always",
    "every",
    "anywhere",
    "everywhere",
    "anything",
    "something",
    "extra",
    "more",
    "less",
    "else",
    "other",
    "another",
    "different",
    "same",
    "possible",
    "available",
    "long",
    "times",
    "discount",
    "exactly",
    "actually",
    "maybe",
    // The folded words that say the kind of answer: "close" and "opening hours" are `open`,
    // "cost" and "how much to pay" `price` ("What time does the cafe close?" is about the
    // cafe).
    "open",
    "price",
];

/// The days of the week: a modifier, and a claim when an answer names one.
pub const DAYS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Whether a word or term is a day of the week.
pub fn is_day(word: &str) -> bool {
    DAYS.contains(&word) || DAYS.contains(&stem(word).as_str())
}

/// How much a modifier weighs in ranking, against 1 for other terms.
const MODIFIER_WEIGHT: f32 = 0.5;

/// Whether a word or term only narrows a question down: [`MODIFIERS`].
pub fn is_modifier(word: &str) -> bool {
    MODIFIERS.contains(&word) || MODIFIERS.contains(&stem(word).as_str()) || is_day(word)
}

/// Whether a word (or a folded term: "wants", "when's") carries no topic.
pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(&word) || STOPWORDS.contains(&stem(word).as_str())
}

/// The content terms of a text: its words without stopwords, folded; a hyphenated word
/// gives its parts too ("check-out" is found by "check out").
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in words(text)
        .iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
    {
        let whole = fold(w);
        let compound = w.contains('-') && whole == stem(w);
        out.push(whole);
        if compound {
            let parts = w
                .split('-')
                .filter(|p| !p.is_empty() && !STOPWORDS.contains(p));
            out.extend(parts.map(fold));
        }
    }
    out
}

/// One fact as ranked against an utterance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    /// Index into the knowledge file's facts.
    pub fact: usize,
    pub score: f32,
    /// Share of the utterance's term weight that the fact holds, 0 to 1.
    pub coverage: f32,
    /// Cosine of the utterance's and the fact's sentence embeddings, when ranked by
    /// meaning ([`Retrieval::by_meaning`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
}

/// Facts ranked against an utterance, best first (facts sharing no term are left out).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Retrieval {
    pub hits: Vec<Hit>,
    /// The utterance's terms that no fact holds.
    pub unknown: Vec<String>,
}

impl Retrieval {
    pub fn best(&self) -> Option<&Hit> {
        self.hits.first()
    }

    /// The best fact's coverage, 0 when nothing matched.
    pub fn coverage(&self) -> f32 {
        self.best().map_or(0.0, |h| h.coverage)
    }

    /// Every fact ranked by meaning: `score = similarity + COVERAGE_WEIGHT * coverage`,
    /// the cosine of the sentence embeddings ([`encoders::text::MiniLm`]) with the shared
    /// words as a tie-breaker. Words alone miss a question put in other words ("where can I
    /// wash my hands" shares none with "Toilets are in the basement"); meaning alone ranks
    /// "check-out is by 11" first for "what time can we check in", and the words then
    /// decide nothing either: the kind and the names asked for do ([`super::asked`]).
    pub fn by_meaning(self, similarities: &[f32]) -> Retrieval {
        let mut coverage = vec![0.0; similarities.len()];
        for h in &self.hits {
            if let Some(c) = coverage.get_mut(h.fact) {
                *c = h.coverage;
            }
        }
        let mut hits: Vec<Hit> = similarities
            .iter()
            .zip(coverage)
            .enumerate()
            .map(|(fact, (&sim, coverage))| Hit {
                fact,
                score: sim + COVERAGE_WEIGHT * coverage,
                coverage,
                similarity: Some(sim),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.fact.cmp(&b.fact)));
        Retrieval {
            hits,
            unknown: self.unknown,
        }
    }
}

/// How much the share of shared words adds to a fact's similarity in
/// [`Retrieval::by_meaning`].
pub const COVERAGE_WEIGHT: f32 = 0.3;

/// The facts of a knowledge file, indexed for BM25.
#[derive(Debug, Clone)]
pub struct FactIndex {
    /// Terms that say nothing of the topic here: the kiosk's own name ("museum").
    ignored: BTreeSet<String>,
    docs: Vec<BTreeMap<String, u32>>,
    lengths: Vec<f32>,
    /// In how many facts each term occurs.
    df: BTreeMap<String, u32>,
    average: f32,
}

impl FactIndex {
    pub fn new<S: AsRef<str>>(facts: &[S]) -> Self {
        let mut docs = Vec::new();
        let mut df: BTreeMap<String, u32> = BTreeMap::new();
        for fact in facts {
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            for t in terms(fact.as_ref()) {
                *counts.entry(t).or_default() += 1;
            }
            for t in counts.keys() {
                *df.entry(t.clone()).or_default() += 1;
            }
            docs.push(counts);
        }
        let lengths: Vec<f32> = docs
            .iter()
            .map(|d| d.values().sum::<u32>() as f32)
            .collect();
        let average = lengths.iter().sum::<f32>() / lengths.len().max(1) as f32;
        FactIndex {
            ignored: BTreeSet::new(),
            docs,
            lengths,
            df,
            average: average.max(1.0),
        }
    }

    /// The index ranking utterances without the terms of `text` (the kiosk's name: a
    /// question to the museum kiosk that says "museum" is no less answered for it).
    pub fn ignoring(mut self, text: &str) -> Self {
        self.ignored = terms(text).into_iter().collect();
        self
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// BM25's inverse document frequency. A term in no fact weighs as much as the rarest
    /// term that is in one: what the facts do not hold counts against coverage as much as
    /// the best evidence counts for it.
    fn idf(&self, term: &str) -> f32 {
        let n = self.docs.len() as f32;
        let df = self.df.get(term).copied().unwrap_or(1).max(1) as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// Whether any fact holds the term.
    pub fn knows(&self, term: &str) -> bool {
        self.df.contains_key(term)
    }

    /// Whether fact `fact` holds the term.
    pub fn holds(&self, fact: usize, term: &str) -> bool {
        self.docs.get(fact).is_some_and(|d| d.contains_key(term))
    }

    /// Every fact that shares a term with `text`, best first.
    pub fn rank(&self, text: &str) -> Retrieval {
        let query: BTreeSet<String> = terms(text)
            .into_iter()
            .filter(|t| !self.ignored.contains(t))
            .collect();
        // A number the facts do not hold ("at 8 in the morning") says nothing of the topic.
        let weighed: Vec<(&String, f32)> = query
            .iter()
            .filter(|t| self.knows(t) || !t.starts_with(|c: char| c.is_ascii_digit()))
            .map(|t| {
                let weight = if is_modifier(t) { MODIFIER_WEIGHT } else { 1.0 };
                (t, weight * self.idf(t))
            })
            .collect();
        let total: f32 = weighed.iter().map(|(_, w)| w).sum();
        let mut hits = Vec::new();
        for (i, doc) in self.docs.iter().enumerate() {
            let (mut score, mut held) = (0.0, 0.0);
            for (t, idf) in &weighed {
                let Some(&tf) = doc.get(*t) else { continue };
                let tf = tf as f32;
                let norm = K1 * (1.0 - B + B * self.lengths[i] / self.average);
                score += idf * tf * (K1 + 1.0) / (tf + norm);
                held += idf;
            }
            if score > 0.0 {
                hits.push(Hit {
                    fact: i,
                    score,
                    coverage: if total > 0.0 { held / total } else { 0.0 },
                    similarity: None,
                });
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.fact.cmp(&b.fact)));
        let unknown = query.into_iter().filter(|t| !self.knows(t)).collect();
        Retrieval { hits, unknown }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_fold_plurals_and_verb_forms() {
        for (word, want) in [
            ("trains", "train"),
            ("leaves", "leave"),
            ("opening", "open"),
            ("swimming", "swim"),
            ("booked", "book"),
            ("toilets", "toilet"),
            ("children", "child"),
            ("galleries", "gallery"),
            ("bus", "bus"),
            ("glass", "glass"),
        ] {
            assert_eq!(stem(word), want, "{word}");
        }
    }

    #[test]
    fn words_keep_prices_times_and_hyphens() {
        assert_eq!(
            words("A one-way ticket: 9.50 euros, at 6:30 am. I'm late!"),
            [
                "a", "one-way", "ticket", "9.50", "euros", "at", "6:30", "am", "i'm", "late"
            ]
        );
    }

    const FACTS: &[&str] = &[
        "The cafe is on the ground floor, next to the main entrance.",
        "The toilets are on every floor, next to the lifts.",
        "Our guest wifi network is called Belvedere-Guest.",
        "Trains to Northbridge leave from platform 2.",
    ];

    #[test]
    fn the_fact_a_question_is_about_ranks_first_through_synonyms() {
        let index = FactIndex::new(FACTS);
        for (question, fact) in [
            ("Where can I get a coffee?", 0),
            ("I'm looking for the loo.", 1),
            ("What's the name of the wifi?", 2),
            ("Which platform for Northbridge?", 3),
        ] {
            let r = index.rank(question);
            assert_eq!(r.best().map(|h| h.fact), Some(fact), "{question}: {r:?}");
        }
    }

    /// A question the facts answer is covered wholly; one about what no fact holds is not.
    #[test]
    fn coverage_falls_with_terms_no_fact_holds() {
        let index = FactIndex::new(FACTS);
        let known = index.rank("Where is the cafe?");
        assert_eq!(known.coverage(), 1.0);
        let password = index.rank("What's the wifi password?");
        assert!(password.coverage() <= 0.5, "{password:?}");
        assert_eq!(password.unknown, ["password"]);
        let nothing = index.rank("He might have been made amiable himself.");
        assert!(nothing.hits.is_empty() && nothing.coverage() == 0.0);
    }
}
