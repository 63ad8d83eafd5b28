//! The persistent worker pool every op of a forward pass is split across.
//!
//! Workers are created once (pinned to one logical CPU per physical core where the OS
//! allows), then wait for work by spinning for a short while and parking after that.
//! One op = one [`ThreadPool::run`] call: the caller publishes a borrowed closure, the
//! item range is cut into one contiguous share per thread, every thread (the caller
//! included, as thread 0) takes chunks of its own share in order from that share's atomic
//! counter and then steals chunks of the others' shares, and the caller returns once all
//! workers have checked out (the single barrier of the op).
//!
//! Why shares instead of one counter for all: with one counter the threads take
//! alternate chunks, so each thread's reads jump by a chunk every chunk and the hardware
//! prefetchers restart each time; a 2-thread GEMV from DRAM then ran at 28 GB/s instead
//! of 36 GB/s (Q4_K, `repack_bench --cold`). A share is one sequential stream, and the
//! chunks still balance the load when a thread is late or descheduled. Nothing on that path allocates or locks
//! unless a worker has gone to sleep (then one mutex + condvar wake-up).
//!
//! Why not rayon: a forward pass is hundreds of small ops per token; rayon's work
//! stealing and its allocation per `scope` cost more than the ops at decode batch sizes,
//! and it cannot promise which thread runs what.

use std::any::Any;
use std::cell::Cell;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker (and a caller waiting at the barrier) spins before it
/// parks / yields. Long enough to cover the gap between two ops of a forward pass,
/// short enough not to burn a core when the engine is idle.
const SPIN_TIME: Duration = Duration::from_micros(200);

/// Bit of `Shared::admit` set once the op accepts no more workers.
const CLOSED: u64 = 1 << 31;
/// Bits of `Shared::admit` counting the workers that entered.
const ENTERED_MASK: u64 = CLOSED - 1;

/// Keeps a hot atomic on its own cache line pair so that threads polling one counter
/// do not invalidate the line another counter lives on.
#[repr(align(128))]
struct Padded<T>(T);

/// The type-erased job of the current op: a borrowed closure plus its item geometry.
#[derive(Clone, Copy)]
struct Job {
    /// Lifetime-erased pointer to the caller's closure; valid until every thread has
    /// checked out of the op (see `ThreadPool::run`).
    f: *const (dyn Fn(Range<usize>, usize) + Sync),
    n_items: usize,
    chunk: usize,
}

struct Shared {
    /// Bumped once per op (and once at shutdown); workers wait for it to change.
    epoch: Padded<AtomicU64>,
    /// Per thread, the next unclaimed chunk (index in chunks, not items) of that
    /// thread's share of the current op.
    shares: Box<[Padded<AtomicUsize>]>,
    /// The op's admission word: `(epoch as u32) << 32 | CLOSED | entered`. A worker may
    /// only touch the op's job after incrementing `entered` while the word still names
    /// the epoch it woke for and is not closed; the caller closes it when the items run
    /// out and then waits only for the workers that entered. A worker that is descheduled
    /// (the machine is shared) therefore never delays an op it did not join.
    admit: Padded<AtomicU64>,
    /// Workers that entered the current op and have finished it.
    done: Padded<AtomicUsize>,
    /// Workers currently parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    /// Set when a job panicked, to stop handing out chunks early.
    panicked: AtomicBool,
    /// The current op; written by the caller only while no worker can be reading it.
    job: std::cell::UnsafeCell<Job>,
    /// First panic payload raised by a worker during the current op.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    /// Serialises ops submitted from different outside threads.
    submit: Mutex<()>,
}

// SAFETY: `job` is only written by the submitting thread while it holds `submit` and no
// worker is inside an op, and only read by workers between entering the op (Acquire on
// `admit`) and their `done` increment, which the submitter waits for. The closure
// it points to is `Sync`. Everything else is atomics and mutexes.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// A raw pointer that may be shared across the pool's threads, for kernels whose work
/// items write disjoint elements of one output (each use says why they are disjoint).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub(crate) *mut T);
// SAFETY: only used for writes to elements that no other work item touches (see each
// use); the pointer itself is plain data.
unsafe impl<T> Sync for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T> Send for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper rather than
    /// the raw-pointer field).
    #[inline(always)]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

thread_local! {
    /// (pool identity, thread id) while this thread executes a job of that pool; lets a
    /// nested `run` on the same pool execute inline instead of deadlocking.
    static IN_POOL: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// A fixed set of worker threads that execute one data-parallel op at a time.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
    pinned: bool,
}

impl ThreadPool {
    /// A pool of `n_threads` threads in total: the calling thread of each [`run`](Self::run)
    /// plus `n_threads − 1` persistent workers (`0` is treated as 1). Workers are pinned
    /// to distinct physical cores when the OS allows (cores 1, 2, … of the process's
    /// allowed set, leaving the first to the caller); if pinning fails they run unpinned.
    pub fn new(n_threads: usize) -> ThreadPool {
        ThreadPool::with_pinning(n_threads, true)
    }

    /// As [`new`](Self::new), choosing whether to pin the workers. Unpinned suits machines
    /// whose cores are shared with other busy processes (e.g. many test processes at once:
    /// pinned, all their workers would queue on the same core).
    pub fn with_pinning(n_threads: usize, pin: bool) -> ThreadPool {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            epoch: Padded(AtomicU64::new(0)),
            shares: (0..n_threads)
                .map(|_| Padded(AtomicUsize::new(0)))
                .collect(),
            admit: Padded(AtomicU64::new(CLOSED)),
            done: Padded(AtomicUsize::new(0)),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: std::cell::UnsafeCell::new(Job {
                f: &|_, _| {},
                n_items: 0,
                chunk: 1,
            }),
            panic: Mutex::new(None),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            submit: Mutex::new(()),
        });
        let cpus = if pin {
            topology::one_cpu_per_core()
        } else {
            Vec::new()
        };
        let pinned_ok = Arc::new(AtomicUsize::new(0));
        let workers = (1..n_threads)
            .map(|tid| {
                let shared = Arc::clone(&shared);
                let cpu = if cpus.len() > 1 {
                    Some(cpus[tid % cpus.len()])
                } else {
                    None
                };
                let pinned_ok = Arc::clone(&pinned_ok);
                std::thread::Builder::new()
                    .name(format!("ferromoe-worker-{tid}"))
                    .spawn(move || {
                        if let Some(cpu) = cpu {
                            if topology::pin_current_thread(cpu) {
                                pinned_ok.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        worker_loop(&shared, tid)
                    })
                    .expect("failed to spawn a pool worker thread")
            })
            .collect::<Vec<_>>();
        // Wait (briefly) for the workers to report whether pinning worked, so `pinned()`
        // is meaningful right after construction.
        let t0 = Instant::now();
        let mut pinned = false;
        if n_threads > 1 && cpus.len() > 1 {
            while t0.elapsed() < Duration::from_millis(200) {
                if pinned_ok.load(Ordering::Relaxed) == n_threads - 1 {
                    pinned = true;
                    break;
                }
                std::thread::yield_now();
            }
        }
        ThreadPool {
            shared,
            workers,
            n_threads,
            pinned,
        }
    }

    /// A pool sized by [`default_threads`].
    pub fn with_default_threads() -> ThreadPool {
        ThreadPool::new(default_threads())
    }

    /// Total threads that execute an op (the caller plus the workers).
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Whether every worker thread was pinned to its own core.
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// Pins the calling thread (the one that will submit ops, thread 0) to the core the
    /// workers leave free (the first of the allowed set). Optional: an unpinned caller can
    /// be migrated onto a worker's core by the scheduler; a pinned one cannot move away
    /// from a busy core. Returns false if the OS refused or the topology is unknown.
    pub fn pin_caller(&self) -> bool {
        match topology::one_cpu_per_core().first() {
            Some(&cpu) => topology::pin_current_thread(cpu),
            None => false,
        }
    }

    /// Runs `f(range, thread_id)` over disjoint ranges covering `0..n_items` exactly once,
    /// split across all threads, and returns when all are done. Ranges are chunks of
    /// about `n_items / (8 · n_threads)` items; use [`run_chunked`](Self::run_chunked) to
    /// choose. `thread_id` is in `0..n_threads()` (0 = the calling thread) and lets the
    /// closure index per-thread scratch.
    ///
    /// A panic inside `f` (on any thread) is re-raised here after all threads have left
    /// the op. Calling `run` from inside a job of the same pool executes the nested op
    /// inline on the current thread (with that thread's id). Ops submitted from several
    /// outside threads run one after the other, so a thread id is never used by two
    /// running closures at once.
    pub fn run<F>(&self, n_items: usize, f: F)
    where
        F: Fn(Range<usize>, usize) + Sync,
    {
        let chunk = n_items.div_ceil(8 * self.n_threads).max(1);
        self.run_chunked(n_items, chunk, f)
    }

    /// As [`run`](Self::run), with ranges of `chunk` items (the last may be shorter).
    /// Every range except possibly the last starts at a multiple of `chunk`.
    pub fn run_chunked<F>(&self, n_items: usize, chunk: usize, f: F)
    where
        F: Fn(Range<usize>, usize) + Sync,
    {
        if n_items == 0 {
            return;
        }
        let chunk = chunk.max(1);
        assert!(
            n_items <= usize::MAX / 2 && chunk <= usize::MAX / (4 * self.n_threads),
            "ThreadPool::run: n_items {n_items} / chunk {chunk} out of range"
        );
        let me = Arc::as_ptr(&self.shared) as usize;
        let (pool, tid) = IN_POOL.with(|c| c.get());
        if pool == me {
            // Nested op on a thread already running a job of this pool: the other
            // threads are busy with the outer op, so run it here, serially.
            run_serial(n_items, chunk, &f, tid);
            return;
        }
        if self.n_threads == 1 || n_items <= chunk {
            // Not worth a barrier: run inline. Still under `submit`, so thread id 0 is
            // never used by two ops at once (closures may index per-thread scratch by id),
            // and marked so that nesting still works.
            let guard = self.shared.submit.lock().unwrap_or_else(|e| e.into_inner());
            let prev = IN_POOL.with(|c| c.replace((me, 0)));
            let r = catch_unwind(AssertUnwindSafe(|| run_serial(n_items, chunk, &f, 0)));
            IN_POOL.with(|c| c.set(prev));
            drop(guard);
            if let Err(p) = r {
                resume_unwind(p);
            }
            return;
        }

        let guard = self.shared.submit.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &*self.shared;
        let f_dyn: &(dyn Fn(Range<usize>, usize) + Sync) = &f;
        // SAFETY: erase the closure's lifetime so it can sit in `Shared`. This function
        // does not return (or unwind) before admission is closed and every worker that
        // entered has incremented `done`; no other worker ever reads this `job`.
        let f_static: *const (dyn Fn(Range<usize>, usize) + Sync) =
            unsafe { std::mem::transmute(f_dyn as *const (dyn Fn(Range<usize>, usize) + Sync)) };
        // SAFETY: no worker is inside an op (the previous op was closed and all that
        // entered it are done, and we hold `submit`), so nobody reads `job` now.
        unsafe {
            *sh.job.get() = Job {
                f: f_static,
                n_items,
                chunk,
            };
        }
        sh.panicked.store(false, Ordering::Relaxed);
        let n_chunks = n_items.div_ceil(chunk);
        for (s, next) in sh.shares.iter().enumerate() {
            next.0
                .store(share_start(s, n_chunks, self.n_threads), Ordering::Relaxed);
        }
        sh.done.0.store(0, Ordering::Relaxed);
        let epoch = sh.epoch.0.load(Ordering::Relaxed).wrapping_add(1);
        // Release: a worker that enters (Acquire CAS on `admit`) sees `job`, `shares`, `done`.
        sh.admit
            .0
            .store((epoch & 0xffff_ffff) << 32, Ordering::Release);
        // SeqCst pairs with the worker's SeqCst `sleepers` increment + epoch re-check
        // (see `wait_for_epoch`) so a wake-up can never be lost.
        sh.epoch.0.store(epoch, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = sh.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }

        let prev = IN_POOL.with(|c| c.replace((me, 0)));
        // SAFETY: `job` was written above and stays valid until we return.
        let job = unsafe { *sh.job.get() };
        let mine = catch_unwind(AssertUnwindSafe(|| execute(sh, job, 0)));
        IN_POOL.with(|c| c.set(prev));
        if mine.is_err() {
            sh.panicked.store(true, Ordering::Relaxed);
        }

        // The barrier: close admission, then wait for the workers that entered.
        let entered = (sh.admit.0.fetch_or(CLOSED, Ordering::AcqRel) & ENTERED_MASK) as usize;
        let t0 = Instant::now();
        let mut spins = 0u32;
        while sh.done.0.load(Ordering::Acquire) != entered {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && t0.elapsed() > SPIN_TIME {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let worker_panic = sh.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(guard);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = worker_panic {
            resume_unwind(p);
        }
    }
}

/// Claims chunks of the current op until none are left (or a job panicked).
fn execute(sh: &Shared, job: Job, tid: usize) {
    // SAFETY: the submitting thread keeps the closure alive until every participant has
    // checked out of this op (see `run_chunked`).
    let f = unsafe { &*job.f };
    let n = sh.shares.len();
    let n_chunks = job.n_items.div_ceil(job.chunk);
    // Own share first (one sequential stream), then help with the others in turn.
    for k in 0..n {
        let s = (tid + k) % n;
        let end = share_start(s + 1, n_chunks, n);
        loop {
            if sh.panicked.load(Ordering::Relaxed) {
                return;
            }
            // A finished share is only read (no cache-line transfer for a claim that
            // cannot succeed); the fetch_add decides.
            if sh.shares[s].0.load(Ordering::Relaxed) >= end {
                break;
            }
            let c = sh.shares[s].0.fetch_add(1, Ordering::Relaxed);
            if c >= end {
                break;
            }
            let start = c * job.chunk;
            f(start..job.n_items.min(start + job.chunk), tid);
        }
    }
}

/// First chunk of thread `s`'s share when `n_chunks` chunks are split over `n` threads
/// (`share_start(n, …) == n_chunks`).
fn share_start(s: usize, n_chunks: usize, n: usize) -> usize {
    // n_chunks ≤ n_items ≤ usize::MAX / 2 and s ≤ n, so use u128 to avoid overflow.
    (s as u128 * n_chunks as u128 / n as u128) as usize
}

fn run_serial(n_items: usize, chunk: usize, f: &(dyn Fn(Range<usize>, usize) + Sync), tid: usize) {
    let mut start = 0;
    while start < n_items {
        let end = n_items.min(start + chunk);
        f(start..end, tid);
        start = end;
    }
}

/// Spins, then parks, until the epoch differs from `seen`; returns the new epoch.
fn wait_for_epoch(sh: &Shared, seen: u64) -> u64 {
    let t0 = Instant::now();
    let mut spins = 0u32;
    loop {
        let e = sh.epoch.0.load(Ordering::Acquire);
        if e != seen {
            return e;
        }
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 && t0.elapsed() > SPIN_TIME {
            break;
        }
        std::hint::spin_loop();
    }
    let mut lock = sh.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
    sh.sleepers.fetch_add(1, Ordering::SeqCst);
    loop {
        let e = sh.epoch.0.load(Ordering::SeqCst);
        if e != seen {
            sh.sleepers.fetch_sub(1, Ordering::SeqCst);
            return e;
        }
        lock = sh.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
    }
}

fn worker_loop(sh: &Shared, tid: usize) {
    let me = sh as *const Shared as usize;
    IN_POOL.with(|c| c.set((me, tid)));
    let mut seen = 0u64;
    loop {
        seen = wait_for_epoch(sh, seen);
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        if !enter(sh, seen) {
            continue; // The op finished without us.
        }
        // SAFETY: we entered the op (Acquire on `admit`), which makes the submitter's
        // `job` write visible; it is not rewritten until we increment `done` below.
        let job = unsafe { *sh.job.get() };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| execute(sh, job, tid))) {
            sh.panicked.store(true, Ordering::Relaxed);
            let mut slot = sh.panic.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(p);
            }
        }
        sh.done.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// Registers the calling worker in op `epoch` unless it is closed or already replaced.
fn enter(sh: &Shared, epoch: u64) -> bool {
    let mut cur = sh.admit.0.load(Ordering::Acquire);
    loop {
        if cur >> 32 != (epoch & 0xffff_ffff) || cur & CLOSED != 0 {
            return false;
        }
        match sh
            .admit
            .0
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.shutdown.store(true, Ordering::SeqCst);
        sh.epoch.0.fetch_add(1, Ordering::SeqCst);
        {
            let _l = sh.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.n_threads)
            .field("pinned", &self.pinned)
            .finish()
    }
}

/// The default thread count: the number of physical cores this process may run on
/// (hyper-threads share a core's load/FMA ports, which is what the kernels saturate),
/// falling back to `std::thread::available_parallelism`, then 1.
pub fn default_threads() -> usize {
    let n = topology::one_cpu_per_core().len();
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// CPU topology and pinning; Linux via sysfs and `sched_setaffinity`, elsewhere no-ops.
mod topology {
    /// One logical CPU id per physical core among the CPUs this process may use, in
    /// ascending order. Empty when the topology cannot be read.
    #[cfg(target_os = "linux")]
    pub fn one_cpu_per_core() -> Vec<usize> {
        let allowed = allowed_cpus();
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for cpu in allowed {
            let base = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
            let read = |f: &str| std::fs::read_to_string(format!("{base}/{f}")).ok();
            let key = match (read("physical_package_id"), read("core_id")) {
                (Some(p), Some(c)) => (p.trim().to_string(), c.trim().to_string()),
                // Unknown topology: count each logical CPU as a core.
                _ => (String::new(), cpu.to_string()),
            };
            if seen.insert(key) {
                out.push(cpu);
            }
        }
        out
    }

    #[cfg(target_os = "linux")]
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: `set` is a plain bitmask owned by this frame; the call writes at most
        // `size_of::<cpu_set_t>()` bytes into it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                let n = std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1);
                return (0..n).collect();
            }
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }

    /// Pins the calling thread to `cpu`; false if the OS refused.
    #[cfg(target_os = "linux")]
    pub fn pin_current_thread(cpu: usize) -> bool {
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        // SAFETY: `set` is a zeroed bitmask owned by this frame, `cpu` is in range, and
        // pid 0 means the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn one_cpu_per_core() -> Vec<usize> {
        Vec::new()
    }

    #[cfg(not(target_os = "linux"))]
    pub fn pin_current_thread(_cpu: usize) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU8;

    fn check_exactly_once(pool: &ThreadPool, n: usize, chunk: Option<usize>) {
        let hits: Vec<AtomicU8> = (0..n).map(|_| AtomicU8::new(0)).collect();
        let body = |r: Range<usize>, tid: usize| {
            assert!(tid < pool.n_threads());
            for i in r {
                hits[i].fetch_add(1, Ordering::Relaxed);
            }
        };
        match chunk {
            Some(c) => pool.run_chunked(n, c, body),
            None => pool.run(n, body),
        }
        for (i, h) in hits.iter().enumerate() {
            assert_eq!(h.load(Ordering::Relaxed), 1, "item {i} of {n}");
        }
    }

    #[test]
    fn every_item_exactly_once() {
        for threads in [1, 2, 3, 4] {
            let pool = ThreadPool::new(threads);
            assert_eq!(pool.n_threads(), threads);
            for n in [0, 1, 2, 7, 64, 1000, 4097] {
                check_exactly_once(&pool, n, None);
                check_exactly_once(&pool, n, Some(1));
                check_exactly_once(&pool, n, Some(13));
            }
        }
    }

    #[test]
    fn huge_item_count() {
        let pool = ThreadPool::new(2);
        let n = 50_000_000usize;
        let sum = AtomicU64::new(0);
        pool.run(n, |r, _| {
            let s: u64 = r.map(|i| i as u64).sum();
            sum.fetch_add(s, Ordering::Relaxed);
        });
        let n64 = n as u64;
        assert_eq!(sum.load(Ordering::Relaxed), n64 * (n64 - 1) / 2);
    }

    #[test]
    fn many_ops_in_a_row() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        let t0 = Instant::now();
        for op in 0..5_000usize {
            let n = op % 37;
            pool.run_chunked(n, 1, |r, _| {
                total.fetch_add(r.len(), Ordering::Relaxed);
            });
        }
        eprintln!("5000 ops: {:?}", t0.elapsed());
        let expect: usize = (0..5_000usize).map(|op| op % 37).sum();
        assert_eq!(total.load(Ordering::Relaxed), expect);
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = ThreadPool::new(2);
        check_exactly_once(&pool, 100, Some(1));
        std::thread::sleep(SPIN_TIME * 5);
        check_exactly_once(&pool, 100, Some(1));
    }

    #[test]
    fn all_threads_participate() {
        let pool = ThreadPool::new(2);
        let seen = [AtomicBool::new(false), AtomicBool::new(false)];
        // Each chunk sleeps, so the worker has time to wake and take some.
        pool.run_chunked(40, 1, |_, tid| {
            seen[tid].store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
        });
        assert!(seen[0].load(Ordering::Relaxed) && seen[1].load(Ordering::Relaxed));
    }

    #[test]
    fn each_thread_streams_its_share_in_order() {
        // Thread 0 runs share 0 in order, then steals share 1's leftovers in order; the
        // worker runs share 1 in order, then share 0's leftovers: so thread 0's items only
        // increase, and the worker's decrease at most once (when it moves to share 0).
        let pool = ThreadPool::new(2);
        for _ in 0..20 {
            let order: [Mutex<Vec<usize>>; 2] = Default::default();
            pool.run_chunked(64, 2, |r, tid| {
                order[tid].lock().unwrap().push(r.start);
                std::thread::sleep(Duration::from_micros(50));
            });
            let [o0, o1] = order.map(|m| m.into_inner().unwrap());
            assert!(o0.windows(2).all(|w| w[0] < w[1]), "thread 0: {o0:?}");
            let drops = o1.windows(2).filter(|w| w[0] > w[1]).count();
            assert!(drops <= 1, "worker: {o1:?}");
            if let Some(&first) = o1.first() {
                // The worker starts in its own share unless thread 0 had emptied it.
                assert!(
                    first >= 32 || o0.contains(&62),
                    "worker began at {first}: {o1:?}"
                );
            }
            assert_eq!(o0.len() + o1.len(), 32);
        }
    }

    #[test]
    fn nested_run_executes_inline() {
        let pool = ThreadPool::new(2);
        let count = AtomicUsize::new(0);
        pool.run_chunked(8, 1, |_, outer_tid| {
            pool.run_chunked(10, 3, |r, tid| {
                assert_eq!(tid, outer_tid);
                count.fetch_add(r.len(), Ordering::Relaxed);
            });
        });
        assert_eq!(count.load(Ordering::Relaxed), 80);
    }

    #[test]
    fn panic_propagates_and_pool_survives() {
        let pool = ThreadPool::new(2);
        for bad in [0usize, 99] {
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run_chunked(100, 1, |r, _| {
                    if r.start == bad {
                        panic!("boom at {bad}");
                    }
                });
            }));
            let msg = r.expect_err("panic must propagate");
            let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
            assert_eq!(text, format!("boom at {bad}"));
        }
        // A panic on the worker specifically: the caller never runs tid 1.
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run_chunked(1000, 1, |_, tid| {
                if tid == 1 {
                    panic!("worker");
                }
                std::thread::sleep(Duration::from_micros(50));
            });
        }));
        assert!(r.is_err());
        check_exactly_once(&pool, 500, Some(7));
    }

    #[test]
    fn concurrent_submitters_are_serialised() {
        let pool = ThreadPool::new(2);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for n in 0..200 {
                        check_exactly_once(&pool, n, Some(2));
                    }
                });
            }
        });
    }

    #[test]
    fn drop_joins_cleanly() {
        for _ in 0..50 {
            let pool = ThreadPool::new(3);
            check_exactly_once(&pool, 10, Some(1));
            drop(pool);
        }
        // Dropping a pool whose workers are parked.
        let pool = ThreadPool::new(2);
        std::thread::sleep(SPIN_TIME * 5);
        drop(pool);
    }

    #[test]
    fn unpinned_pool_works() {
        let pool = ThreadPool::with_pinning(2, false);
        assert!(!pool.pinned());
        check_exactly_once(&pool, 777, Some(5));
    }

    #[test]
    fn pinned_caller_still_runs_ops() {
        let pool = ThreadPool::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                // Pinning may be refused (containers); the pool must work either way.
                let _ = pool.pin_caller();
                check_exactly_once(&pool, 1000, Some(3));
            });
        });
    }

    #[test]
    fn default_threads_is_positive() {
        let n = default_threads();
        assert!(n >= 1);
        assert!(
            n <= std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .max(1)
        );
    }
}
