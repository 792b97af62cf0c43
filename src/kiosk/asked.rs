//! What a question asks for, and whether a fact can give it.
//!
//! Word overlap says which fact a question is about, not whether that fact answers it:
//! "How long does a guided tour last?" shares "guided tour" with a fact that gives only the
//! tours' start times, and "What time does the cafe close?" the cafe with a fact that gives
//! only where it is. The kind of answer a question wants (a time, a price, a place ...) is in
//! its opening words; whether a fact holds one is in its numbers and place words. A fact that
//! cannot give the kind asked for is no answer, however many words it shares.
//!
//! The question's words that no fact holds are the other half of the evidence. A thing no
//! fact names ("the wifi password", "a sauna", "my umbrella") means the facts do not answer;
//! a verb no fact uses ("when do you shut", "can I grab a coffee") is only another way of
//! asking, and a word that says when or how much ("tonight", "later", "extra": see
//! [`is_modifier`]) only narrows the question. Without a tagger, verbs are told from things
//! by their company: a word right after a subject, a modal or "to", one before a particle
//! ("turn up"), a participle ("have ended", "was wondering"), the word after a question's
//! subject ("does the chemist shut"). Nor is a thing asked for what only frames the
//! question: a noun after a time preposition ("before work"), what the visitor lost ("I
//! dropped a glove"), the people with them ("my mum"), adverbs ("old enough").

use super::grounding::names;
use super::retrieval::{is_modifier, is_stopword, terms, words};
use super::routing::asked_part;

/// The kind of answer a question wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Wanted {
    /// "What time ...", "when ...", "until when ...".
    Time,
    /// "How much ...", "what does it cost ...".
    Price,
    /// "How long ...".
    Duration,
    /// "Where ...", "which way ...", "which floor ...".
    Place,
    /// "Which platform ...".
    Platform,
    /// "How many ...".
    Count,
    /// "What's the phone number ...", "email address": digits to dial or an address.
    Contact,
    /// "Who ...", "what is it called".
    Name,
    /// A yes/no question or anything else: the topic decides.
    Any,
}

/// Phrases that ask for each kind, in the order they are tried ("how much time" is a
/// price question no one asks; "how long" must win over "when" in "how long until when").
const ASKS: &[(Wanted, &[&str])] = &[
    (
        Wanted::Contact,
        &[
            "phone number",
            "telephone number",
            "number to call",
            "contact number",
            "email",
            "e-mail",
            "website",
        ],
    ),
    (Wanted::Duration, &["how long"]),
    (
        Wanted::Price,
        &[
            "how much",
            "cost",
            "costs",
            "price",
            "prices",
            "charge",
            "fee",
            "fees",
            "pay",
            "expensive",
            "cheap",
            "discount",
            "discounts",
        ],
    ),
    (Wanted::Count, &["how many"]),
    (Wanted::Platform, &["which platform", "what platform"]),
    (
        Wanted::Time,
        &[
            "what time",
            "when",
            "when's",
            "how late",
            "how early",
            "what hours",
            "opening hours",
            "which days",
            "what days",
        ],
    ),
    (
        Wanted::Place,
        &[
            "where",
            "where's",
            "which way",
            "which floor",
            "what floor",
            "how do i get to",
            "how do we get to",
        ],
    ),
    (
        Wanted::Name,
        &[
            "who",
            "who's",
            "called",
            "what's the name",
            "what is the name",
        ],
    ),
];

/// Words that state a place: a floor, a level, a side, a spot beside something.
const PLACE_WORDS: &[&str] = &[
    "floor",
    "level",
    "platform",
    "basement",
    "wing",
    "entrance",
    "exit",
    "outside",
    "inside",
    "beside",
    "next",
    "opposite",
    "behind",
    "below",
    "above",
    "near",
    "front",
    "upstairs",
    "downstairs",
    "lobby",
    "hall",
    "room",
    "desk",
    "stop",
    "end",
    "corner",
    "side",
    "rooftop",
    "terrace",
    "garden",
    "building",
    "office",
    "counter",
    "gate",
    "concourse",
    "reception",
    "left",
    "right",
    "here",
    "there",
];

/// Units of a length of time.
const DURATION_UNITS: &[&str] = &[
    "minute", "minutes", "min", "hour", "hours", "day", "days", "week", "weeks", "month", "months",
    "night", "nights",
];

/// Number words, for counts and durations said in words ("two weeks").
const NUMBER_WORDS: &[&str] = &[
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "twenty", "thirty", "fifty", "hundred",
];

/// Words after which the next word is taken for a verb: subjects, modals, "to".
const BEFORE_A_VERB: &[&str] = &[
    "i", "you", "we", "they", "he", "she", "it", "to", "can", "could", "will", "would", "shall",
    "should", "may", "might", "must", "do", "does", "did", "i'd", "we'd", "you'd", "i'll", "we'll",
    "please", "let's", "not", "don't", "doesn't", "didn't", "cannot", "can't", "and", "or", "i'm",
    "we're", "you're", "they're", "i've", "we've",
];

/// Words of amount and the particles of phrasal verbs ("how many", "a few hours", "drop
/// off", "come back"): they say how much or which way, never what.
const AMOUNTS_AND_PARTICLES: &[&str] = &[
    "many", "few", "much", "more", "most", "some", "lot", "lots", "back", "off", "out", "up",
    "down", "away", "over", "along", "isn't", "aren't", "earliest", "latest", "showing", "show",
    "after", "before", "all", "little", "every", "each", "whole",
];

/// Prepositions before "my" or "our" that make what follows the visitor's circumstances.
const PREPOSITIONS: &[&str] = &["on", "with", "for", "from", "in", "at", "by", "about"];

/// Prepositions of time: what follows says when ("before work", "after our swim"), not what.
const WHEN_PREPOSITIONS: &[&str] = &["before", "after", "during", "until", "till"];

/// Words that come between a preposition or a verb and its noun ("after our swim", "lost
/// my umbrella", "dropped a glove").
const DETERMINERS: &[&str] = &[
    "the", "a", "an", "my", "our", "your", "his", "her", "their", "this", "that", "some",
];

/// Adverbs of degree, place and time: they say how, where or when, never what ("is he old
/// enough", "leave the car outside", "a taxi home").
const ADVERBS: &[&str] = &[
    "enough",
    "outside",
    "inside",
    "home",
    "together",
    "alone",
    "yet",
    "still",
    "already",
    "again",
    "really",
    "just",
    "ever",
    "quite",
    "very",
    "too",
    "also",
    "even",
    "anymore",
    "somewhere",
    "anywhere",
    "everywhere",
    "often",
    "always",
    "usually",
    "sometimes",
    "around",
    "round",
];

/// The particles that make a phrasal verb of the word before them ("turn up", "end up",
/// "pick up"): that word is an action.
const VERB_PARTICLES: &[&str] = &[
    "up", "off", "out", "back", "down", "away", "over", "around", "round",
];

/// Verbs of losing: their object is the visitor's own thing ("I lost my umbrella", "I
/// dropped a glove"), what the question is about is where lost things go.
const LOSING: &[&str] = &[
    "lost",
    "lose",
    "left",
    "dropped",
    "forgot",
    "forgotten",
    "misplaced",
    "mislaid",
];

/// The people a visitor comes with: never a thing the venue offers ("see my mum on the
/// ward", "my husband uses a wheelchair").
const COMPANIONS: &[&str] = &[
    "mum",
    "mom",
    "mother",
    "dad",
    "father",
    "parent",
    "parents",
    "son",
    "daughter",
    "kid",
    "kids",
    "child",
    "children",
    "boy",
    "girl",
    "baby",
    "wife",
    "husband",
    "partner",
    "friend",
    "friends",
    "grandmother",
    "grandma",
    "grandfather",
    "grandad",
    "granddad",
    "grandpa",
    "sister",
    "brother",
    "family",
    "grandchildren",
    "grandson",
    "granddaughter",
];

/// Forms of "be" after which a word in -ing is a verb ("I was wondering", "we're staying").
const BE: &[&str] = &[
    "am", "i'm", "is", "are", "was", "were", "we're", "you're", "be", "been",
];

/// Auxiliaries after which a word in -ed is a participle ("would it have ended up").
const PERFECT: &[&str] = &[
    "have", "has", "had", "i've", "we've", "been", "was", "were", "got",
];

/// The kind of answer `question` wants.
pub fn wanted(question: &str) -> Wanted {
    let w = words(question);
    let text = format!(" {} ", w.join(" "));
    ASKS.iter()
        .find(|(_, phrases)| phrases.iter().any(|p| text.contains(&format!(" {p} "))))
        .map_or(Wanted::Any, |(kind, _)| *kind)
}

fn is_number(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit()) || NUMBER_WORDS.contains(&word)
}

/// Whether `fact` holds an answer of the kind wanted.
pub fn gives(fact: &str, kind: Wanted) -> bool {
    let w = words(fact);
    let has = |list: &[&str]| w.iter().any(|x| list.contains(&x.as_str()));
    let followed_by = |pred: &dyn Fn(&str) -> bool, list: &[&str]| {
        w.windows(2)
            .any(|p| pred(&p[0]) && list.contains(&p[1].as_str()))
    };
    match kind {
        Wanted::Any => true,
        Wanted::Time => {
            has(&["am", "pm", "noon", "midnight", "clock", "24-hour", "closed"])
                || w.iter().any(|x| x.contains(':') && is_number(x))
                || followed_by(&is_number, &["am", "pm", "o'clock", "hours"])
                // A time relative to another: "arrive 15 minutes before your appointment".
                || w.windows(3).any(|t| {
                    is_number(&t[0])
                        && DURATION_UNITS.contains(&t[1].as_str())
                        && matches!(t[2].as_str(), "before" | "after" | "early" | "earlier")
                })
        }
        Wanted::Price => {
            has(&[
                "euro", "euros", "eur", "cent", "cents", "dollar", "dollars", "pound", "pounds",
                "free", "charge", "costs", "cost",
            ]) || fact.contains(['€', '$', '£'])
        }
        Wanted::Duration => {
            followed_by(&is_number, DURATION_UNITS) || has(&["clock", "24-hour", "overnight"])
        }
        Wanted::Place => has(PLACE_WORDS),
        Wanted::Platform => w
            .windows(2)
            .any(|p| matches!(p[0].as_str(), "platform" | "platforms") && is_number(&p[1])),
        Wanted::Count => w.iter().any(|x| is_number(x)),
        // A number to dial has six digits or more ("01 234 5678" counts them all).
        Wanted::Contact => {
            (fact.chars().filter(char::is_ascii_digit).count() >= 6
                && w.iter()
                    .any(|x| matches!(x.as_str(), "phone" | "call" | "number" | "tel")))
                || fact.contains('@')
                || fact.contains("www.")
        }
        Wanted::Name => !names(fact).is_empty() || fact.contains('"'),
    }
}

/// The terms of `question` that no fact holds and that name a thing rather than an action
/// (see the module's doc): `unknown` is the retrieval's list of terms no fact holds.
pub fn unknown_things(question: &str, unknown: &[String]) -> Vec<String> {
    let w = words(asked_part(question));
    let mut things = Vec::new();
    for (i, word) in w.iter().enumerate() {
        let Some(term) = terms(word).into_iter().next() else {
            continue;
        };
        let narrows = is_modifier(word)
            || is_modifier(&term)
            || AMOUNTS_AND_PARTICLES.contains(&word.as_str());
        if !unknown.contains(&term) || is_number(word) || narrows || is_stopword(&term) {
            continue;
        }
        let bare = word.strip_suffix("'s").unwrap_or(word);
        if ADVERBS.contains(&word.as_str()) || COMPANIONS.contains(&bare) {
            continue;
        }
        let before = |k: usize| i.checked_sub(k).map_or("", |j| w[j].as_str());
        let next = w.get(i + 1).map_or("", String::as_str);
        let verb = (i > 0 && BEFORE_A_VERB.contains(&before(1)))
            // "a sauna up by the pool": after a determiner it is a thing all the same.
            || (VERB_PARTICLES.contains(&next) && !DETERMINERS.contains(&before(1)))
            || (word.ends_with("ed") && PERFECT.contains(&before(1)))
            || (word.ends_with("ing") && BE.contains(&before(1)))
            // The verb after a question's subject: "what time does the chemist shut".
            || (i > 2
                && DETERMINERS.contains(&before(2))
                && matches!(before(3), "do" | "does" | "did" | "can" | "will" | "would"));
        // "on my laptop", "with my parents": the visitor's own things, the circumstances
        // of the question rather than what it asks for ("leave my coat" still asks).
        let own = i > 1 && matches!(before(1), "my" | "our") && PREPOSITIONS.contains(&before(2));
        // The word that governs this one, past a determiner: "before (my) work", "lost
        // (my) umbrella".
        let head = if DETERMINERS.contains(&before(1)) {
            before(2)
        } else {
            before(1)
        };
        let when = WHEN_PREPOSITIONS.contains(&head);
        let lost = LOSING.contains(&head);
        if !verb && !own && !when && !lost && !things.contains(&term) {
            things.push(term);
        }
    }
    things
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remarks_amounts_and_the_visitors_own_things_are_not_things_asked_for() {
        let unknown = |ws: &[&str]| ws.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let things = |q: &str, ws: &[&str]| unknown_things(q, &unknown(ws));
        assert!(things("how many books can i take out at once", &["many"]).is_empty());
        assert!(things("my son wants to see the t-rex, where do we go", &["t-rex"]).is_empty());
        assert!(
            things(
                "what do i connect to for internet on my laptop",
                &["laptop"]
            )
            .is_empty()
        );
        assert!(things("how early can i get in on a weekday before work", &["work"]).is_empty());
        assert!(things("is he old enough", &["enough"]).is_empty());
        assert!(things("do i have to book or can i just turn up", &["turn"]).is_empty());
        assert!(things("where would it have ended up", &["end"]).is_empty());
        assert!(things("i lost my umbrella, where should i go", &["umbrella"]).is_empty());
        assert!(things("when can i see my mum on the ward", &["mum"]).is_empty());
        assert!(things("what time does the chemist shut", &["shut"]).is_empty());
        assert!(things("is there anyone who can show us around", &["around"]).is_empty());
        assert_eq!(
            things("what time does the chemist shut", &["chemist"]),
            ["chemist"]
        );
        // The thing asked for still counts, after a verb and "my" too.
        assert_eq!(things("where can i leave my coat", &["coat"]), ["coat"]);
        assert_eq!(
            things("what's the wifi password", &["password"]),
            ["password"]
        );
    }

    #[test]
    fn the_opening_words_say_what_is_wanted() {
        assert_eq!(
            wanted("How long does a guided tour last?"),
            Wanted::Duration
        );
        assert_eq!(wanted("what time do you shut on a friday"), Wanted::Time);
        assert_eq!(wanted("How much is a taxi to the airport?"), Wanted::Price);
        assert_eq!(wanted("where can i get a coffee"), Wanted::Place);
        assert_eq!(wanted("Which platform for Lakeside?"), Wanted::Platform);
        assert_eq!(wanted("Can I bring my dog?"), Wanted::Any);
        assert_eq!(wanted("Who is the director?"), Wanted::Name);
        assert_eq!(
            wanted("what's the phone number for cardiology"),
            Wanted::Contact
        );
    }

    #[test]
    fn a_fact_gives_only_the_kinds_it_holds() {
        let cafe = "The cafe is on the ground floor, next to the main entrance.";
        assert!(gives(cafe, Wanted::Place));
        assert!(!gives(cafe, Wanted::Time));
        assert!(!gives(cafe, Wanted::Price));
        let tours = "Guided tours start at 11 am, 1 pm and 3 pm at the front desk.";
        assert!(gives(tours, Wanted::Time));
        assert!(!gives(tours, Wanted::Duration));
        let bus = "A replacement bus runs every 30 minutes from stop C.";
        assert!(gives(bus, Wanted::Duration));
        assert!(gives(
            "Trains to Northbridge leave from platform 2.",
            Wanted::Platform
        ));
        assert!(!gives(
            "The taxi rank is just outside the north exit.",
            Wanted::Platform
        ));
        assert!(gives(
            "Tickets: adults 12 euros; under 4 free.",
            Wanted::Price
        ));
        assert!(gives(
            "Please arrive 15 minutes before your appointment.",
            Wanted::Time
        ));
        assert!(!gives(
            "Cardiology is on the first floor, rooms 1.10 to 1.24.",
            Wanted::Contact
        ));
        assert!(gives(
            "Call the front desk on 01 234 5678.",
            Wanted::Contact
        ));
    }

    #[test]
    fn things_no_fact_names_are_told_from_other_verbs() {
        let unknown = |q: &str, u: &[&str]| {
            unknown_things(q, &u.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            unknown("what's the wifi password", &["password"]),
            ["password"]
        );
        assert!(unknown("what time do you shut on a friday", &["shut"]).is_empty());
        assert!(unknown("is there anywhere i can grab a coffee", &["grab"]).is_empty());
        assert_eq!(
            unknown("Is there a sauna up by the pool?", &["sauna"]),
            ["sauna"]
        );
    }
}
