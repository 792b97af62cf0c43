//! Grounded captions: a caption names only what the encoders saw.
//!
//! How: the language model writes a caption from the scene's text (fusion's
//! `LabelProjector`), and the caption is then *checked*: every object word in it (any of
//! the 80 COCO names, the 1000 ImageNet classes' lemmas, their plurals and everyday
//! synonyms) must belong to something in the scene, and it must name the scene's subject
//! (the most confident detection, else the most confident label above the mention
//! threshold). A caption that fails is replaced by one written from the scene itself
//! ([`template`]), which by construction names only what was seen.
//!
//! Why a check and not constrained decoding: the object vocabulary is ~3,000 phrases of
//! one to four words, and "no unseen object" is a property of whole words, which a token
//! grammar over a 49k BPE vocabulary can only enforce by listing every allowed sentence
//! shape; a check after decoding costs nothing, cannot be fooled by sub-word splits, and
//! the fallback is a caption a user can trust. The price: a 135M model's caption is often
//! replaced (the share is in `--json` as `grounding`).

use std::collections::{BTreeSet, HashSet};

use encoders::vision::detect::COCO;
use encoders::vision::{Labels, Scene};
use fusion::vision::{article, looks_like, objects_phrase, plural};

/// Everyday words for COCO classes, each allowed when that class is detected.
const SYNONYMS: [(&str, &[&str]); 12] = [
    (
        "person",
        &[
            "people", "persons", "man", "men", "woman", "women", "child", "children", "kid",
            "kids", "boy", "boys", "girl", "girls", "someone", "human", "humans",
        ],
    ),
    ("cat", &["kitten", "kittens", "kitty"]),
    ("dog", &["puppy", "puppies"]),
    ("cup", &["mug", "mugs", "coffee"]),
    ("couch", &["sofa", "sofas"]),
    ("tv", &["television", "televisions", "screen"]),
    ("cell phone", &["phone", "phones", "smartphone"]),
    ("dining table", &["table", "tables"]),
    ("motorcycle", &["motorbike", "motorbikes"]),
    ("bicycle", &["bike", "bikes"]),
    ("airplane", &["plane", "planes", "aeroplane"]),
    ("potted plant", &["plant", "plants"]),
];

/// Words about the picture itself, never objects in it, whatever lemma ends in them
/// ("shopping center", "Polaroid camera"): the camera is the speaker.
const PICTURE_WORDS: [&str; 16] = [
    "camera",
    "cameras",
    "center",
    "centre",
    "left",
    "right",
    "side",
    "top",
    "bottom",
    "front",
    "back",
    "middle",
    "background",
    "foreground",
    "scene",
    "view",
];

/// Longest object phrase, in words.
const MAX_PHRASE: usize = 4;

/// Every object word percept knows, and which of them a scene allows.
pub struct Vocabulary {
    phrases: HashSet<String>,
    /// Each ImageNet class's lemmas, normalised.
    lemmas: Vec<Vec<String>>,
}

/// Why a caption was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// It names objects the scene does not hold.
    Unseen(Vec<String>),
    /// It does not name the scene's subject.
    MissesSubject(String),
    /// It gives a count no kind of object in the scene has.
    WrongCount(String),
    /// It says the same clause twice, or stops mid-sentence (the model ran on).
    RunOn,
    /// It explains or classifies ("which is a type of ...", "used in ...") instead of
    /// saying what is in view, or echoes the prompt: claims no encoder can see.
    Explains(String),
    Empty,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Unseen(words) => write!(f, "names what was not seen: {}", words.join(", ")),
            Rejection::MissesSubject(s) => write!(f, "does not name the subject ({s})"),
            Rejection::WrongCount(n) => write!(f, "counts {n}, which the scene does not hold"),
            Rejection::RunOn => write!(f, "repeats itself or runs on"),
            Rejection::Explains(w) => write!(f, "explains rather than describes ('{w}')"),
            Rejection::Empty => write!(f, "is empty"),
        }
    }
}

impl Vocabulary {
    /// The vocabulary of the detector's classes and of the classifier's `labels`.
    pub fn new(labels: &Labels) -> Self {
        let mut phrases = HashSet::new();
        for name in COCO {
            phrases.extend(forms(name));
        }
        for (_, words) in SYNONYMS {
            phrases.extend(words.iter().map(|w| w.to_string()));
        }
        let lemmas: Vec<Vec<String>> = (0..labels.len())
            .map(|class| labels.lemmas(class).iter().map(|l| normalise(l)).collect())
            .collect();
        for lemma in lemmas.iter().flatten() {
            phrases.extend(forms(lemma));
        }
        // A "glass" is an object word too when "wine glass" is one: the last word (of three
        // letters or more) of every name and lemma.
        let heads: Vec<String> = phrases
            .iter()
            .filter_map(|p| p.rsplit_once(' ').map(|(_, last)| last.to_owned()))
            .filter(|last| last.len() > 2)
            .collect();
        phrases.extend(heads);
        phrases.remove("");
        for w in PICTURE_WORDS {
            phrases.remove(w);
        }
        Vocabulary { phrases, lemmas }
    }

    fn lemmas(&self, class: usize) -> &[String] {
        self.lemmas.get(class).map_or(&[], Vec::as_slice)
    }

    /// The object phrases in `text`, longest match first, in order.
    pub fn object_words(&self, text: &str) -> Vec<String> {
        let normal = normalise(text);
        let words: Vec<&str> = normal.split(' ').filter(|w| !w.is_empty()).collect();
        let mut found = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let longest = (1..=MAX_PHRASE.min(words.len() - i))
                .rev()
                .find(|&n| self.phrases.contains(&words[i..i + n].join(" ")));
            match longest {
                Some(n) => {
                    found.push(words[i..i + n].join(" "));
                    i += n;
                }
                None => i += 1,
            }
        }
        found
    }

    /// The object words a scene allows: its detections' names, plurals and synonyms, and
    /// the lemmas (with their plurals and last words: a "tiger cat" is a "cat") of the
    /// classifier's labels above the mention threshold.
    pub fn allowed(&self, scene: &Scene) -> BTreeSet<String> {
        let mut allowed = BTreeSet::new();
        for o in &scene.objects {
            allowed.extend(forms_and_head(o.label));
            allowed.extend(synonyms(o.label).iter().map(|w| w.to_string()));
        }
        for l in scene
            .whole
            .labels
            .iter()
            .filter(|l| l.prob >= fusion::vision::MENTION)
        {
            for lemma in self.lemmas(l.class) {
                allowed.extend(forms_and_head(lemma));
            }
        }
        allowed
    }

    /// The words that name the scene's subject (any one will do), and the subject's name;
    /// `None` when nothing clear is in view.
    pub fn subject(&self, scene: &Scene) -> Option<(String, BTreeSet<String>)> {
        if let Some(o) = scene.objects.first() {
            let mut words: BTreeSet<String> = forms(o.label).into_iter().collect();
            words.extend(synonyms(o.label).iter().map(|w| w.to_string()));
            return Some((o.label.to_owned(), words));
        }
        let top = scene
            .whole
            .labels
            .first()
            .filter(|l| l.prob >= fusion::vision::MENTION)?;
        let mut words = BTreeSet::new();
        for lemma in self.lemmas(top.class) {
            words.extend(forms(lemma));
        }
        Some((top.name.clone(), words))
    }

    /// Whether `caption` may be shown for `scene`.
    pub fn check(&self, caption: &str, scene: &Scene) -> Result<(), Rejection> {
        if caption.trim().is_empty() {
            return Err(Rejection::Empty);
        }
        if runs_on(caption) {
            return Err(Rejection::RunOn);
        }
        if let Some(w) = explains(caption) {
            return Err(Rejection::Explains(w));
        }
        let allowed = self.allowed(scene);
        let found = self.object_words(caption);
        let unseen: Vec<String> = found
            .iter()
            .filter(|w| !allowed.contains(*w))
            .cloned()
            .collect();
        if !unseen.is_empty() {
            return Err(Rejection::Unseen(unseen));
        }
        if let Some(n) = wrong_count(caption, scene) {
            return Err(Rejection::WrongCount(n));
        }
        match self.subject(scene) {
            Some((name, words)) if !found.iter().any(|w| words.contains(w)) => {
                Err(Rejection::MissesSubject(name))
            }
            _ => Ok(()),
        }
    }

    /// The caption to show: the model's when it passes [`Vocabulary::check`], else the
    /// scene's own; with the reason the model's was not used.
    pub fn ground(&self, generated: &str, scene: &Scene) -> (String, Option<Rejection>) {
        let generated = without_speaker(&without_percentages(&first_sentence(generated)));
        match self.check(&generated, scene) {
            Ok(()) => (generated, None),
            Err(why) => (template(scene), Some(why)),
        }
    }
}

/// A caption written from the scene alone: "Two people on the left and a horse in the
/// centre; it looks like a seashore." / "It looks like a tiger cat." / "Nothing clear is in
/// view."
pub fn template(scene: &Scene) -> String {
    let objects = objects_phrase(&scene.objects);
    let looks = looks_like(scene);
    let looks = looks
        .first()
        .map(|l| format!("{} {}", article(&normalise(&l.name)), l.name));
    let text = match (objects.is_empty(), looks) {
        (true, None) => return "Nothing clear is in view.".into(),
        (true, Some(l)) => format!("it looks like {l}"),
        (false, None) => objects,
        (false, Some(l)) => format!("{objects}; it looks like {l}"),
    };
    let mut chars = text.chars();
    let first = chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>())
        .unwrap_or_default();
    format!("{first}{}.", chars.as_str())
}

/// The caption up to its first sentence end (a small model runs on).
fn first_sentence(text: &str) -> String {
    let text = text.trim();
    match text.find(['.', '!', '?']) {
        Some(i) => text[..=i].to_owned(),
        None => text.to_owned(),
    }
}

/// Words of a caption that tells what things are for or are made of, or echoes the
/// prompt, rather than what is in view; and the longest caption in words.
const EXPLAINING: [&str; 14] = [
    "which",
    "designed",
    "used",
    "known",
    "type",
    "kind",
    "made",
    "common",
    "detector",
    "sentence",
    "percent",
    "probability",
    "typically",
    "usually",
];
const MAX_WORDS: usize = 20;

/// The first explaining word of a caption (or "too long").
fn explains(caption: &str) -> Option<String> {
    let normal = normalise(caption);
    let words: Vec<&str> = normal.split(' ').collect();
    if words.len() > MAX_WORDS {
        return Some(format!("{} words", words.len()));
    }
    // A measure ("13mm", "5kg") is nothing a camera frame tells.
    words
        .iter()
        .find(|w| {
            EXPLAINING.contains(w)
                || (w.chars().any(|c| c.is_ascii_digit()) && w.parse::<u32>().is_err())
        })
        .map(|w| w.to_string())
}

/// Whether a caption repeats a clause or stops without ending its sentence.
fn runs_on(caption: &str) -> bool {
    let caption = caption.trim();
    if !caption.ends_with(['.', '!']) {
        return true;
    }
    let clauses: Vec<String> = caption
        .split([',', ';', '.'])
        .map(normalise)
        .filter(|c| c.split(' ').count() >= 2)
        .collect();
    clauses
        .iter()
        .enumerate()
        .any(|(i, c)| clauses[..i].contains(c))
}

/// A number in the caption ("two", "3") that is not the count of any kind of object seen.
fn wrong_count(caption: &str, scene: &Scene) -> Option<String> {
    const WORDS: [&str; 11] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    let mut counts: Vec<usize> = Vec::new();
    for o in &scene.objects {
        counts.push(scene.objects.iter().filter(|p| p.label == o.label).count());
    }
    normalise(caption).split(' ').find_map(|w| {
        let n = WORDS
            .iter()
            .position(|x| *x == w)
            .or_else(|| w.parse().ok())?;
        // "one" is also a pronoun ("the one on the left"): only counts of two or more.
        (n != 1 && !counts.contains(&n)).then(|| w.to_owned())
    })
}

/// "The camera sees a cat." -> "A cat.": the model speaks as the camera it is told it is.
fn without_speaker(text: &str) -> String {
    let lower = text.to_lowercase();
    for lead in [
        "the camera sees ",
        "a camera sees ",
        "i see ",
        "the camera shows ",
    ] {
        if lower.starts_with(lead) && text.len() > lead.len() {
            let rest = &text[lead.len()..];
            let mut chars = rest.chars();
            let first: String = chars
                .next()
                .map(|c| c.to_uppercase().collect())
                .unwrap_or_default();
            return format!("{first}{}", chars.as_str());
        }
    }
    text.to_owned()
}

/// "a horse with a Mexican hairless (25%)" -> "a horse with a Mexican hairless": the
/// model echoes the scene text's probabilities.
fn without_percentages(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(" (") {
        let tail = &rest[open + 2..];
        match tail.find(")") {
            Some(close)
                if tail[..close].trim_end_matches('%').parse::<f32>().is_ok()
                    && tail[..close].ends_with('%') =>
            {
                out.push_str(&rest[..open]);
                rest = &tail[close + 1..];
            }
            _ => {
                out.push_str(&rest[..open + 2]);
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Lower case, letters and digits only, single spaces: "German shepherd, Alsatian" ->
/// "german shepherd alsatian".
fn normalise(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The everyday words for a COCO class (none for most).
fn synonyms(label: &str) -> &'static [&'static str] {
    SYNONYMS
        .iter()
        .find(|(c, _)| *c == label)
        .map_or(&[], |(_, words)| words)
}

/// A name and its plural.
fn forms(name: &str) -> Vec<String> {
    vec![name.to_owned(), plural(name)]
}

/// A name, its plural, and its last word's (a "wine glass" is a "glass").
fn forms_and_head(name: &str) -> Vec<String> {
    let mut all = forms(name);
    if let Some((_, last)) = name.rsplit_once(' ') {
        all.extend(forms(last));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sentence_and_normalised_words() {
        assert_eq!(first_sentence(" A cat. And a dog."), "A cat.");
        assert_eq!(
            normalise("German shepherd, Alsatian!"),
            "german shepherd alsatian"
        );
    }
}
