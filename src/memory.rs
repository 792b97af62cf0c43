//! How percept's process holds its heap: few allocator arenas, and freed memory given back
//! between utterances.
//!
//! glibc's allocator gives threads arenas of their own (up to eight per core) and keeps
//! what a thread frees in its arena for reuse; after the first large block is freed it also
//! serves blocks of that size from the arenas instead of mapping them afresh. A pipeline of
//! a dozen stage and pool threads then holds the transients of Whisper, the sentence
//! encoder and the language model arena by arena: `percept kiosk --audio` peaked at 303 MiB
//! with the default arenas and at 295 MiB with four (the fixture, 2 threads, 3 runs each).

/// Arenas the allocator may create, whatever the core count.
const ARENAS: i32 = 4;

/// Caps glibc's allocator arenas at [`ARENAS`] (nothing elsewhere). Call before any thread
/// starts; `MALLOC_ARENA_MAX` in the environment still wins, as glibc documents.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt takes no pointers; called at start-up, before other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

/// Returns freed heap pages to the system (glibc; nothing elsewhere): well under a
/// millisecond, next to an utterance's hundreds.
pub fn give_back_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and may be called at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
