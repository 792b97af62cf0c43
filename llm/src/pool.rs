//! A persistent pool for the matrix products: `threads - 1` workers that wait for work by
//! spinning, then yielding, and only after a while of idleness by sleeping.
//!
//! Why not rayon: a decode step is ~200 matrix products of 50-300 µs with other work in
//! between; rayon's workers fall asleep in between, and waking them through the kernel cost
//! 16% of a two-thread decode step (futex wake-ups and context switches in the profile).
//! llama.cpp's threads spin between operations for the same reason.
//!
//! A panic in a job is caught where it happens: a worker's is recorded and the worker goes
//! on to the next job; the caller's own part is caught too, and in either case `run` waits
//! until every worker has left the job (whose closure borrows the caller's stack) before it
//! resumes the panic on the caller's thread. Neither a use after return nor a caller
//! spinning for a worker that died can happen.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker keeps checking for work before it sleeps: longer than the gaps
/// between the products of one decode step, short enough not to burn a core when the
/// model is idle.
const SPIN: Duration = Duration::from_millis(2);
/// How long of that it spins without yielding: the gaps inside a decode step (a norm, the
/// next quantization) are microseconds, and a `sched_yield` each time was 2% of a step.
const SPIN_HOT: Duration = Duration::from_micros(200);

type Job = dyn Fn(usize) + Sync;

/// A job pointer that workers may read; it is only dereferenced while `run` waits.
#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is `Sync` and outlives every use (see `Pool::run`).
unsafe impl Send for JobPtr {}

struct Shared {
    parts: usize,
    /// Incremented for every job; a worker runs each epoch once.
    epoch: AtomicUsize,
    /// Workers still running the current job.
    remaining: AtomicUsize,
    job: Mutex<Option<JobPtr>>,
    /// The first panic of a worker in the current job, resumed on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

pub struct Pool {
    shared: Arc<Shared>,
    /// One job at a time: callers on other threads (tests, two models) take turns.
    running: Mutex<()>,
}

impl Pool {
    fn new(parts: usize) -> Self {
        let shared = Arc::new(Shared {
            parts,
            epoch: AtomicUsize::new(0),
            remaining: AtomicUsize::new(0),
            job: Mutex::new(None),
            panic: Mutex::new(None),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        });
        for part in 1..parts {
            let s = shared.clone();
            // A pool that cannot start its threads runs everything on the caller (`run`
            // counts only workers that exist): slower, still correct.
            let started = std::thread::Builder::new()
                .name(format!("percept-matmul-{part}"))
                .spawn(move || worker(&s, part));
            if started.is_err() {
                return Pool::new(1);
            }
        }
        Pool {
            shared,
            running: Mutex::new(()),
        }
    }

    /// The process-wide pool, as wide as rayon's global pool (which `--threads` sizes).
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool::new(rayon::current_num_threads().max(1)))
    }

    /// Number of parts a job is split into (the caller takes part 0).
    pub fn parts(&self) -> usize {
        self.shared.parts
    }

    /// Runs `f` on every item of `items`, each exactly once, on all the pool's threads:
    /// each thread takes the next `claim` items from a shared counter until none are
    /// left, so a thread that starts late, or is slowed, takes fewer.
    pub fn for_each_claimed<T: Send>(
        &self,
        items: &mut [T],
        claim: usize,
        f: impl Fn(&mut T) + Sync,
    ) {
        /// The items, lent to every thread of the job.
        struct Items<T>(*mut T, usize);
        // SAFETY: each index is handed out once (below), so the threads never share an item.
        unsafe impl<T: Send> Sync for Items<T> {}
        impl<T> Items<T> {
            /// Item `i`'s address (a method, so that closures capture the whole `Items`).
            fn at(&self, i: usize) -> *mut T {
                self.0.wrapping_add(i)
            }
        }
        let items = Items(items.as_mut_ptr(), items.len());
        let (len, claim) = (items.1, claim.max(1));
        let next = AtomicUsize::new(0);
        self.run(&|_| {
            loop {
                let first = next.fetch_add(claim, Ordering::Relaxed);
                if first >= len {
                    break;
                }
                for i in first..(first + claim).min(len) {
                    // SAFETY: `fetch_add` gives every index to one thread only, and the
                    // slice outlives `run`, which returns once every thread is done.
                    f(unsafe { &mut *items.at(i) });
                }
            }
        });
    }

    /// Runs `job(part)` for every part, the caller doing part 0; returns when all are done.
    /// A panic in any part is resumed here, after every part has finished.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        let s = &self.shared;
        if s.parts == 1 {
            job(0);
            return;
        }
        let _turn = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY (lifetime): the pointer is cleared and every worker has finished with it
        // before this function returns, so erasing the lifetime is sound.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(job) };
        *s.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(JobPtr(ptr));
        s.remaining.store(s.parts - 1, Ordering::Release);
        s.epoch.fetch_add(1, Ordering::AcqRel);
        if *s.sleepers.lock().unwrap_or_else(|p| p.into_inner()) > 0 {
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        while s.remaining.load(Ordering::Acquire) > 0 {
            std::hint::spin_loop();
        }
        *s.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let theirs = s.panic.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if let Some(payload) = theirs {
            resume_unwind(payload);
        }
    }
}

fn worker(s: &Shared, part: usize) {
    let mut seen = 0;
    loop {
        // Wait for a new epoch: spin, then yield, then sleep.
        let started = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            spins += 1;
            // The clock read every 256 spins only.
            if !spins.is_multiple_of(256) || started.elapsed() < SPIN_HOT {
                std::hint::spin_loop();
            } else if started.elapsed() < SPIN {
                std::thread::yield_now();
            } else {
                let mut sleepers = s.sleepers.lock().unwrap_or_else(|p| p.into_inner());
                *sleepers += 1;
                while s.epoch.load(Ordering::Acquire) == seen {
                    sleepers = s.wake.wait(sleepers).unwrap_or_else(|p| p.into_inner());
                }
                *sleepers -= 1;
            }
        };
        seen = epoch;
        let job = *s.job.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `run` keeps the job alive until `remaining` reaches zero.
            let done = catch_unwind(AssertUnwindSafe(|| unsafe { (*ptr)(part) }));
            if let Err(payload) = done {
                s.panic
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(payload);
            }
        }
        s.remaining.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_per_job_from_any_thread() {
        let pool = Pool::new(3);
        let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        pool.run(&|p| {
                            counts[p].fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        // Idle long enough for the workers to fall asleep, then wake them.
        std::thread::sleep(SPIN * 3);
        pool.run(&|p| {
            counts[p].fetch_add(1, Ordering::Relaxed);
        });
        for c in &counts {
            assert_eq!(c.load(Ordering::Relaxed), 2001);
        }
    }

    /// Issue 15: a panic in the caller's part unwound out of `run` while the workers could
    /// still be running the closure it had lent them.
    #[test]
    fn a_panic_in_the_callers_part_waits_for_the_workers_then_unwinds() {
        let pool = Pool::new(3);
        let finished = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|p| {
                if p == 0 {
                    panic!("part 0 fails");
                }
                std::thread::sleep(Duration::from_millis(20));
                finished.fetch_add(1, Ordering::SeqCst);
            })
        }));
        assert!(result.is_err());
        // Both workers were done with the job before `run` gave the panic back.
        assert_eq!(finished.load(Ordering::SeqCst), 2);
    }

    /// Issue 15: a worker that panicked never counted itself done, and the caller spun for
    /// it forever.
    #[test]
    fn a_panic_in_a_worker_reaches_the_caller_and_the_pool_goes_on() {
        let pool = Pool::new(3);
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|p| {
                if p == 2 {
                    panic!("part 2 fails");
                }
            })
        }));
        let payload = result.expect_err("the worker's panic is resumed on the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"part 2 fails"));
        let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        pool.run(&|p| {
            counts[p].fetch_add(1, Ordering::Relaxed);
        });
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }
}
