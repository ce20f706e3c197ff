//! A persistent, spinning thread team for the fine-grained fork-joins of decoding.
//!
//! Decoding one token of GPT-2 124M runs about sixty parallel kernels of 50–400 µs each,
//! separated by serial gaps of a few µs. Between them rayon's idle workers go to sleep after a
//! few dozen yields, so every kernel starts by waking a worker through the kernel (tens of µs on
//! this machine), and the caller meanwhile runs its half alone: `perf` put 6.5% of a decoded
//! token in those wake-ups. The team's helpers instead spin on one atomic word for
//! [`SPIN`] after their last task (a token's serial gaps are far shorter), then park.
//!
//! [`run`] hands tasks `0..tasks` out one at a time through a single atomic word that packs the
//! job's epoch, its task count and the next unclaimed task, so a helper can only claim a task of
//! the job it saw published, and the caller claims tasks too: a parked or late helper never
//! delays a job (the caller simply runs its tasks), it only fails to help. The caller returns
//! once every task has finished. One job runs at a time: a call made while the team is busy
//! (another thread's job, or a task calling [`run`] again) runs on rayon instead, so
//! concurrent callers and nesting stay correct.

use rayon::prelude::*;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks. Decoding's gaps between kernels (a layer
/// norm, a residual add, sampling a token) are µs to a fraction of a ms; between requests a
/// helper parks and costs nothing.
pub const SPIN: Duration = Duration::from_millis(2);

/// Jobs with more tasks than this run on rayon (the claim word holds 16-bit counts).
const MAX_TASKS: usize = u16::MAX as usize;

/// Runs `task(t)` for every `t` in `0..tasks`, in parallel, and returns when all have
/// finished. Tasks are claimed dynamically, so which thread runs a task is unspecified;
/// results must depend only on `t`. A panic in a task is re-raised here once the others have
/// finished.
pub fn run(tasks: usize, task: impl Fn(usize) + Sync) {
    if tasks == 0 {
        return;
    }
    if tasks == 1 {
        task(0);
        return;
    }
    match team() {
        Some(team) if tasks <= MAX_TASKS && !IN_TASK.get() && ENABLED.load(Relaxed) => {
            match team.try_begin() {
                Some(job) => job.run(tasks, &task),
                None => (0..tasks).into_par_iter().for_each(&task),
            }
        }
        _ => (0..tasks).into_par_iter().for_each(&task),
    }
}

/// Whether [`run`] uses the team (true unless [`set_enabled`] turned it off).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the team on or off for later [`run`] calls (off: they run on rayon). For A/B probes
/// (`examples/decode_ab.rs team`); nothing else needs it.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Splits `buf` into consecutive chunks of `chunk` elements (the last may be shorter) and runs
/// `f(t, chunk_t)` for each in parallel through [`run`].
pub fn for_each_chunk_mut<T: Send>(
    buf: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if buf.is_empty() {
        return;
    }
    let chunk = chunk.max(1);
    let len = buf.len();
    let base = BufPtr(buf.as_mut_ptr());
    run(len.div_ceil(chunk), |t| {
        let start = t * chunk;
        let n = chunk.min(len - start);
        // SAFETY: chunk t covers start..start + n, inside `buf` (t < ⌈len / chunk⌉), and
        // distinct t give disjoint ranges; `buf` is borrowed mutably for the whole call, which
        // outlives every task (`run` returns only when all have finished).
        let part = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
        f(t, part);
    });
}

/// A raw pointer to a buffer whose disjoint chunks the tasks of one job write.
struct BufPtr<T>(*mut T);
// SAFETY: see `for_each_chunk_mut`: tasks touch disjoint chunks of a buffer that outlives them.
unsafe impl<T: Send> Sync for BufPtr<T> {}
impl<T> BufPtr<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the field).
    fn get(&self) -> *mut T {
        self.0
    }
}

thread_local! {
    /// True on a thread while it runs a team task: a nested [`run`] goes to rayon.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// The process's team: `min(rayon threads, cores) − 1` helpers, spawned on first use; `None`
/// with a single thread (everything runs inline) or when a helper could not be spawned.
fn team() -> Option<&'static Team> {
    static TEAM: OnceLock<Option<&'static Team>> = OnceLock::new();
    *TEAM.get_or_init(|| {
        let helpers = rayon::current_num_threads().min(crate::threads::cores()) - 1;
        if helpers == 0 {
            return None;
        }
        let team: &'static Team = Box::leak(Box::new(Team::default()));
        for i in 0..helpers {
            let spawned = std::thread::Builder::new()
                .name(format!("gpt-team-{i}"))
                .spawn(move || team.help());
            if spawned.is_err() {
                // Helpers already running only ever help; with none, run inline on rayon.
                return (i > 0).then_some(team);
            }
        }
        Some(team)
    })
}

/// What a job publishes: its task function (borrowed from the caller's stack for the job).
struct JobRef<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    /// The epoch it was published under (checked by helpers in debug builds).
    epoch: u64,
}

/// The shared state of the team.
#[derive(Default)]
struct Team {
    /// `epoch << 32 | tasks << 16 | next`: the current job and its next unclaimed task.
    claim: AtomicU64,
    /// The current job's [`JobRef`]; dereferenced only after a successful claim, when the job
    /// is known to be running (its caller waits for the claimed task).
    job: AtomicPtr<JobRef<'static>>,
    /// Tasks of the current job that have finished.
    done: AtomicUsize,
    /// A task of the current job panicked on a helper.
    panicked: AtomicBool,
    /// Held (true) while a caller runs a job.
    busy: AtomicBool,
    /// Helpers parked on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// The right to publish one job (the team's `busy` flag, released on drop).
struct Begun<'t>(&'t Team);

impl Drop for Begun<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, SeqCst);
    }
}

const fn unpack(word: u64) -> (u64, usize, usize) {
    (
        word >> 32,
        ((word >> 16) & 0xffff) as usize,
        (word & 0xffff) as usize,
    )
}

impl Team {
    fn try_begin(&self) -> Option<Begun<'_>> {
        self.busy
            .compare_exchange(false, true, SeqCst, SeqCst)
            .is_ok()
            // Lazily: a `Begun` built and dropped on failure would clear the flag it failed on.
            .then(|| Begun(self))
    }

    /// Claims the next task of the job of `epoch`: `Some(t)` if one was left, `None` once the
    /// job has no unclaimed task or a newer job replaced it.
    fn claim(&self, epoch: u64) -> Option<usize> {
        let mut word = self.claim.load(SeqCst);
        loop {
            let (e, tasks, next) = unpack(word);
            if e != epoch || next >= tasks {
                return None;
            }
            match self
                .claim
                .compare_exchange_weak(word, word + 1, SeqCst, SeqCst)
            {
                Ok(_) => return Some(next),
                Err(now) => word = now,
            }
        }
    }

    /// A helper's life: wait for a new epoch (spinning, then parked), help with its tasks.
    fn help(&self) {
        let mut seen = unpack(self.claim.load(SeqCst)).0;
        loop {
            seen = self.wait_for_job(seen);
            while let Some(t) = self.claim(seen) {
                // SAFETY: the claim of task t of epoch `seen` succeeded, so that job's caller
                // is still in `Begun::run`, waiting for t to finish: its JobRef (published
                // before the epoch) is alive and has not been replaced.
                let job = unsafe { &*self.job.load(SeqCst) };
                debug_assert_eq!(job.epoch, seen, "a helper ran another job's task");
                IN_TASK.set(true);
                let result = catch_unwind(AssertUnwindSafe(|| (job.task)(t)));
                IN_TASK.set(false);
                if result.is_err() {
                    self.panicked.store(true, SeqCst);
                }
                self.done.fetch_add(1, SeqCst);
            }
        }
    }

    /// Returns the epoch of the first job published after `seen`.
    fn wait_for_job(&self, seen: u64) -> u64 {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = unpack(self.claim.load(SeqCst)).0;
            if epoch != seen {
                return epoch;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(32) {
                // Give the core away if another thread wants it (a rayon worker running a
                // kernel that is not a team job): spinning through its time slice would
                // stall that kernel by a scheduler tick.
                std::thread::yield_now();
                if start.elapsed() > SPIN {
                    break;
                }
            }
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, SeqCst);
        loop {
            let epoch = unpack(self.claim.load(SeqCst)).0;
            if epoch != seen {
                self.sleepers.fetch_sub(1, SeqCst);
                return epoch;
            }
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Begun<'_> {
    /// Publishes `task` over `0..tasks` (`2..=MAX_TASKS`), runs tasks alongside the helpers and
    /// returns when all have finished.
    fn run(self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        let team = self.0;
        let epoch = (unpack(team.claim.load(SeqCst)).0 + 1) & 0xffff_ffff;
        let job = JobRef { task, epoch };
        team.done.store(0, SeqCst);
        team.panicked.store(false, SeqCst);
        // SAFETY (lifetime erasure): helpers dereference this pointer only after claiming a
        // task of this epoch, and this function does not return before every claimed task has
        // finished (`done == tasks` below), so the JobRef outlives all uses.
        let ptr = &job as *const JobRef<'_> as *mut JobRef<'static>;
        team.job.store(ptr, SeqCst);
        team.claim.store(epoch << 32 | (tasks as u64) << 16, SeqCst);
        if team.sleepers.load(SeqCst) > 0 {
            let _guard = team.lock.lock().unwrap_or_else(|e| e.into_inner());
            team.wake.notify_all();
        }
        let mut mine = Ok(());
        while let Some(t) = team.claim(epoch) {
            IN_TASK.set(true);
            let result = catch_unwind(AssertUnwindSafe(|| task(t)));
            IN_TASK.set(false);
            if mine.is_ok() {
                mine = result;
            }
            team.done.fetch_add(1, SeqCst);
        }
        while team.done.load(SeqCst) < tasks {
            std::hint::spin_loop();
        }
        debug_assert_eq!(
            team.done.load(SeqCst),
            tasks,
            "more tasks finished than published"
        );
        debug_assert_eq!(
            unpack(team.claim.load(SeqCst)),
            (epoch, tasks, tasks),
            "another job was published while this one ran"
        );
        let helper_panicked = team.panicked.load(SeqCst);
        drop(self);
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        assert!(!helper_panicked, "a task of a parallel kernel panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_exactly_once() {
        for tasks in [0, 1, 2, 3, 17, 1000] {
            for _ in 0..50 {
                let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
                run(tasks, |t| {
                    hits[t].fetch_add(1, SeqCst);
                });
                assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "{tasks} tasks");
            }
        }
    }

    #[test]
    fn nested_and_concurrent_calls_complete() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..100 {
                        run(4, |_| {
                            run(3, |_| {
                                total.fetch_add(1, SeqCst);
                            })
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 3 * 100 * 4 * 3);
    }

    #[test]
    fn concurrent_nested_jobs_each_run_every_task_once() {
        std::thread::scope(|s| {
            for th in 0..2 {
                s.spawn(move || {
                    for it in 0..2000 {
                        let outer: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
                        let inner: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
                        run(4, |t| {
                            outer[t].fetch_add(1, SeqCst);
                            run(3, |_| {
                                inner[t].fetch_add(1, SeqCst);
                            })
                        });
                        let o: Vec<usize> = outer.iter().map(|x| x.load(SeqCst)).collect();
                        let i: Vec<usize> = inner.iter().map(|x| x.load(SeqCst)).collect();
                        assert!(
                            o == [1; 4] && i == [3; 4],
                            "thread {th} call {it}: outer tasks {o:?}, inner {i:?}"
                        );
                    }
                });
            }
        });
    }

    #[test]
    fn chunks_cover_the_buffer_once() {
        let mut buf = vec![0usize; 1003];
        for_each_chunk_mut(&mut buf, 100, |t, c| {
            for (i, x) in c.iter_mut().enumerate() {
                *x += t * 100 + i + 1;
            }
        });
        assert!(buf.iter().enumerate().all(|(i, &x)| x == i + 1));
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_team_survives() {
        let finished = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            run(8, |t| {
                if t == 5 {
                    panic!("task five");
                }
                finished.fetch_add(1, SeqCst);
            })
        }));
        assert!(result.is_err());
        assert!(finished.load(SeqCst) <= 7);
        // The team still works afterwards.
        let hits = AtomicUsize::new(0);
        run(5, |_| {
            hits.fetch_add(1, SeqCst);
        });
        assert_eq!(hits.load(SeqCst), 5);
    }
}
