//! Text to IPA phonemes through the espeak-ng library, with Piper's rules for punctuation
//! and sentence breaks.
//!
//! The library (`libespeak-ng.so.1`, Debian's `espeak-ng` package) is opened at run time
//! with `dlopen` rather than linked: percept then builds without espeak's headers, and a
//! machine without it gets an error naming the package when a voice is first used, not a
//! build failure. The library is used, not the `espeak-ng` program, for speed (no process
//! per sentence) and because it returns one clause per call, which is how Piper (through
//! piper-phonemize) reinserts punctuation.
//!
//! espeak-ng keeps global state, so every call holds one process-wide lock.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::{Mutex, OnceLock};

/// `espeak_AUDIO_OUTPUT::AUDIO_OUTPUT_SYNCHRONOUS`: no sound device is opened.
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
/// `espeakCHARS_UTF8`.
const CHARS_UTF8: c_int = 1;
/// `espeakPHONEMES_IPA`: IPA as UTF-8, no separators or ties (piper-phonemize's mode).
const PHONEMES_IPA: c_int = 0x02;
/// Longest text handed to espeak in one call: a kiosk answer is a few hundred bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EspeakError {
    #[error(
        "espeak-ng is not installed ({0}); install it with `apt-get install espeak-ng` \
         (scripts/setup does)"
    )]
    Missing(String),
    #[error("espeak-ng could not start: {0}")]
    Init(String),
    #[error("espeak-ng has no voice '{0}' (see `espeak-ng --voices`)")]
    Voice(String),
    #[error("text of {0} bytes is longer than the {MAX_TEXT_BYTES} bytes a voice reads at once")]
    TooLong(usize),
}

type Initialize = unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int;
type SetVoiceByName = unsafe extern "C" fn(*const c_char) -> c_int;
type TextToPhonemes = unsafe extern "C" fn(*mut *const c_void, c_int, c_int) -> *const c_char;

struct Library {
    set_voice: SetVoiceByName,
    to_phonemes: TextToPhonemes,
    /// The voice set last, so a second voice name costs a call only when it changes.
    voice: Option<String>,
}

// The function pointers point into a library that stays loaded for the process's life.
unsafe impl Send for Library {}

fn library() -> Result<&'static Mutex<Library>, EspeakError> {
    static LIBRARY: OnceLock<Result<Mutex<Library>, EspeakError>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| open().map(Mutex::new))
        .as_ref()
        .map_err(|e| match e {
            EspeakError::Missing(m) => EspeakError::Missing(m.clone()),
            EspeakError::Init(m) => EspeakError::Init(m.clone()),
            other => EspeakError::Init(other.to_string()),
        })
}

fn open() -> Result<Library, EspeakError> {
    let symbol = |handle: *mut c_void, name: &CStr| -> Result<*mut c_void, EspeakError> {
        // SAFETY: `handle` came from dlopen and `name` is NUL-terminated.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if p.is_null() {
            Err(EspeakError::Missing(format!(
                "libespeak-ng.so.1 has no {}",
                name.to_string_lossy()
            )))
        } else {
            Ok(p)
        }
    };
    // SAFETY: a plain dlopen of a library name; the handle is never closed.
    let handle = unsafe { libc::dlopen(c"libespeak-ng.so.1".as_ptr(), libc::RTLD_NOW) };
    if handle.is_null() {
        return Err(EspeakError::Missing("libespeak-ng.so.1 not found".into()));
    }
    // SAFETY: the symbols have these C signatures in speak_lib.h (espeak-ng 1.49 and later).
    let (initialize, set_voice, to_phonemes) = unsafe {
        (
            std::mem::transmute::<*mut c_void, Initialize>(symbol(handle, c"espeak_Initialize")?),
            std::mem::transmute::<*mut c_void, SetVoiceByName>(symbol(
                handle,
                c"espeak_SetVoiceByName",
            )?),
            std::mem::transmute::<*mut c_void, TextToPhonemes>(symbol(
                handle,
                c"espeak_TextToPhonemes",
            )?),
        )
    };
    // SAFETY: no buffer, default data path, no options; returns the sample rate or -1.
    let rate = unsafe { initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, std::ptr::null(), 0) };
    if rate <= 0 {
        return Err(EspeakError::Init(format!(
            "espeak_Initialize returned {rate}: is espeak-ng-data installed?"
        )));
    }
    Ok(Library {
        set_voice,
        to_phonemes,
        voice: None,
    })
}

/// One clause as espeak returned it, and the punctuation that ended it.
#[derive(Debug, Clone, PartialEq)]
struct Clause {
    phonemes: String,
    end: Option<char>,
}

/// The clauses of `text`, phonemised with espeak-ng's `voice` (`en-us`).
fn clauses(text: &str, voice: &str) -> Result<Vec<Clause>, EspeakError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(EspeakError::TooLong(text.len()));
    }
    // espeak stops at a NUL; a NUL inside the text ends it there.
    let text = CString::new(text.replace('\0', " ")).expect("NULs replaced");
    let mut lib = library()?.lock().unwrap_or_else(|p| p.into_inner());
    if lib.voice.as_deref() != Some(voice) {
        let name = CString::new(voice).map_err(|_| EspeakError::Voice(voice.into()))?;
        // SAFETY: a NUL-terminated voice name.
        if unsafe { (lib.set_voice)(name.as_ptr()) } != 0 {
            return Err(EspeakError::Voice(voice.into()));
        }
        lib.voice = Some(voice.to_string());
    }
    let bytes = text.as_bytes();
    let start = text.as_ptr();
    let mut at: *const c_void = start.cast();
    let mut out = Vec::new();
    while !at.is_null() {
        let from = at as usize - start as usize;
        // SAFETY: `at` points into `text`, which outlives the call; espeak advances it to
        // the next clause, or sets it to NULL at the end.
        let phonemes = unsafe { (lib.to_phonemes)(&mut at, CHARS_UTF8, PHONEMES_IPA) };
        let to = if at.is_null() {
            bytes.len()
        } else {
            (at as usize - start as usize).min(bytes.len())
        };
        let phonemes = if phonemes.is_null() {
            String::new()
        } else {
            // SAFETY: espeak returns a NUL-terminated string valid until the next call.
            unsafe { CStr::from_ptr(phonemes) }
                .to_string_lossy()
                .into_owned()
        };
        let consumed = String::from_utf8_lossy(&bytes[from.min(to)..to]);
        out.push(Clause {
            phonemes,
            end: terminator(&consumed),
        });
        if to <= from && !at.is_null() {
            break; // espeak did not advance: never loop forever.
        }
    }
    Ok(out)
}

/// The punctuation that ended a clause, from the text espeak consumed for it. espeak reads
/// ahead (the pointer it returns sits a character into the next word: "Hello, h"), so this
/// is the last `. ? ! , : ;` followed by a space, a closing quote or bracket, or the end.
fn terminator(consumed: &str) -> Option<char> {
    let chars: Vec<char> = consumed.chars().collect();
    let closing = |c: char| matches!(c, '"' | '\'' | ')' | ']' | '\u{201d}' | '\u{2019}');
    (0..chars.len()).rev().find_map(|i| {
        let c = chars[i];
        if !matches!(c, '.' | '?' | '!' | ',' | ':' | ';') {
            return None;
        }
        let rest = chars[i + 1..].iter().find(|&&n| !closing(n));
        (rest.is_none_or(|n| n.is_whitespace())).then_some(c)
    })
}

/// Piper's sentences from espeak's clauses: a clause's phonemes, then its punctuation
/// (`,` `:` `;` followed by a space); `.` `?` `!` end the sentence.
fn sentences(clauses: Vec<Clause>) -> Vec<Vec<char>> {
    let mut out = Vec::new();
    let mut sentence: Vec<char> = Vec::new();
    for clause in clauses {
        sentence.extend(clause.phonemes.chars());
        match clause.end {
            Some(p @ ('.' | '?' | '!')) => {
                sentence.push(p);
                out.push(std::mem::take(&mut sentence));
            }
            Some(p) => {
                sentence.push(p);
                sentence.push(' ');
            }
            None => {}
        }
    }
    if !sentence.is_empty() {
        out.push(sentence);
    }
    out.retain(|s| s.iter().any(|c| !c.is_whitespace()));
    out
}

/// The phonemes of each sentence of `text`, as Piper's `phonemize_espeak` gives them.
pub fn phonemize(text: &str, voice: &str) -> Result<Vec<Vec<char>>, EspeakError> {
    Ok(sentences(clauses(text, voice)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(p: &str, end: Option<char>) -> Clause {
        Clause {
            phonemes: p.into(),
            end,
        }
    }

    #[test]
    fn punctuation_follows_piper() {
        let s = sentences(vec![
            clause("həlˈoʊ", Some(',')),
            clause("hˈaʊ ɑːɹ juː", Some('?')),
            clause("aɪɐm fˈaɪn", Some('!')),
            clause("ænd", None),
        ]);
        let s: Vec<String> = s.into_iter().map(|c| c.into_iter().collect()).collect();
        assert_eq!(s, ["həlˈoʊ, hˈaʊ ɑːɹ juː?", "aɪɐm fˈaɪn!", "ænd"]);
    }

    #[test]
    fn terminators_skip_closing_quotes() {
        assert_eq!(terminator("He said \"hi.\" W"), Some('.'));
        assert_eq!(terminator("Hello, h"), Some(','));
        assert_eq!(terminator("ow are you? I"), Some('?'));
        assert_eq!(terminator("costs 9.50 for adults; g"), Some(';'));
        assert_eq!(terminator("costs 9.50 in total"), None);
        assert_eq!(terminator("so long that espeak split it"), None);
    }
}
