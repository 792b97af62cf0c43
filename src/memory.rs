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

/// Blocks at least this large are mapped afresh (and unmapped when freed); smaller ones
/// come from the heap. glibc's own threshold moves with what is freed, and its trim
/// threshold (twice that) with it: on Whisper's steps of tensors from tens of KB to a few
/// MB the heap's top was handed back and faulted in again some two thousand times over the
/// ten speech clips, a fifth of the transcription's time in page faults (perf). Fixed at
/// 16 MiB, with the heap's top kept up to the same size, transcription took half the time
/// (`bench speech`, 2 threads, real-time factor 0.10 -> 0.053) for a few MiB more peak
/// memory in the kiosk (32 MiB: as fast, 5-15 MiB more; a trim threshold of 8 MiB: only
/// 0.085).
const MMAP_THRESHOLD: i32 = 16 << 20;
const TRIM_THRESHOLD: i32 = 16 << 20;

/// Caps glibc's allocator arenas at [`ARENAS`] and fixes its mapping and trimming
/// thresholds ([`MMAP_THRESHOLD`], [`TRIM_THRESHOLD`]); nothing elsewhere. Call before
/// any thread starts; `MALLOC_ARENA_MAX`, and malloc settings in `GLIBC_TUNABLES`, in
/// the environment still win.
pub fn tune_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        // SAFETY: mallopt takes no pointers; called at start-up, before other threads.
        unsafe {
            if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
                libc::mallopt(libc::M_ARENA_MAX, ARENAS);
            }
            if !tunables {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
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
