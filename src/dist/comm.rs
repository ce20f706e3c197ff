//! [`World`]: the ranks of a data-parallel run and their collectives, every one of them carried
//! out on one communication thread that owns the backend (MPI, or threads of one process in the
//! tests).
//!
//! Why a thread. MPI calls must come from one thread at a time, and a collective blocks until
//! every rank has joined it; the gradient all-reduce should instead run while the backward pass
//! goes on. So the backend lives on its own thread, which takes jobs in order from a channel:
//! [`World::post_all_reduce_sum`] queues a job and returns at once, and the caller collects the
//! result later ([`Pending::wait`]). Every rank issues the same jobs in the same order (the loop
//! is deterministic), which is what MPI requires of collectives.

use crate::error::{Error, Result};
use std::fmt;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The reduction of [`World::all_reduce_f64`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Elementwise sum.
    Sum,
    /// Elementwise maximum.
    Max,
}

/// What a backend does: the collectives, on the communication thread.
pub trait Backend {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// `recv = Σ over ranks of send`, the same on every rank.
    fn all_reduce_sum_f32(&mut self, send: &[f32], recv: &mut [f32]);
    /// `recv = op over ranks of send`.
    fn all_reduce_f64(&mut self, send: &[f64], recv: &mut [f64], op: ReduceOp);
    /// Every rank's `value`, in rank order.
    fn all_gather_u64(&mut self, value: u64) -> Vec<u64>;
    /// The concatenation of every rank's `mine`, rank `r` contributing `counts[r]` values.
    fn all_gather_varcount_f32(&mut self, mine: &[f32], counts: &[usize]) -> Vec<f32>;
    /// Waits for every rank.
    fn barrier(&mut self);
    /// Ends every rank of the job with exit status `code` (MPI_Abort).
    fn abort(&mut self, code: i32);
}

/// A job for the communication thread.
enum Job {
    AllReduceSum(Vec<f32>, Sender<Vec<f32>>),
    AllReduceF64(Vec<f64>, ReduceOp, Sender<Vec<f64>>),
    AllGatherU64(u64, Sender<Vec<u64>>),
    AllGatherVarcount(Vec<f32>, Vec<usize>, Sender<Vec<f32>>),
    Barrier(Sender<()>),
    Abort(i32),
}

/// The communication thread of a world of more than one rank.
struct Comm {
    rank: usize,
    size: usize,
    jobs: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Comm {
    /// Closes the channel, which ends the thread, which drops the backend (MPI_Finalize).
    fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        self.close();
    }
}

/// The ranks of a run: this process's rank, their number and the collectives. Cheap to clone
/// (clones share the communication thread). [`World::solo`] (the default) is one rank.
#[derive(Clone, Default)]
pub struct World {
    comm: Option<Arc<Comm>>,
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "World(rank {} of {})", self.rank(), self.size())
    }
}

/// A result of a collective still on its way ([`World::post_all_reduce_sum`]).
pub struct Pending<T> {
    rx: Option<Receiver<T>>,
    ready: Option<T>,
}

impl<T> Pending<T> {
    /// Blocks until the collective is done and returns its result.
    pub fn wait(self) -> Result<T> {
        if let Some(v) = self.ready {
            return Ok(v);
        }
        match self.rx.map(|rx| rx.recv()) {
            Some(Ok(v)) => Ok(v),
            _ => Err(lost()),
        }
    }
}

fn lost() -> Error {
    Error::usage(
        "data parallel",
        "the communication thread stopped (another rank failed?)",
    )
}

/// The environment variables by which a launcher (Open MPI's `mpirun`, MPICH's Hydra, Slurm's
/// PMI) tells a process how many ranks it runs with.
const WORLD_SIZE_VARS: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"];

/// The world size a launcher set in the environment, if any.
pub fn launcher_world_size() -> Option<usize> {
    WORLD_SIZE_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// Threads per rank when a launcher started several ranks on this machine and neither
/// `--threads` nor `RAYON_NUM_THREADS` says: the cores shared out among them (so that `mpirun
/// -np 2` on 2 cores runs 1 thread each rather than 4 fighting over 2 cores).
pub fn default_threads_per_rank() -> Option<usize> {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return None;
    }
    let local: usize = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())?;
    (local > 1).then(|| (crate::threads::cores() / local).max(1))
}

/// The world of this process's command, once set ([`World::set_current`]).
static CURRENT: std::sync::OnceLock<World> = std::sync::OnceLock::new();

impl World {
    /// Makes `world` the one [`World::current`] returns (the command line sets it once, before
    /// a training command runs); later calls change nothing.
    pub fn set_current(world: World) {
        let _ = CURRENT.set(world);
    }

    /// The world [`World::set_current`] set, else one rank.
    pub fn current() -> World {
        CURRENT.get().cloned().unwrap_or_default()
    }

    /// One rank: every collective is the identity.
    pub fn solo() -> World {
        World { comm: None }
    }

    /// The world this process was started in: MPI's when a launcher (`mpirun`) started it with
    /// more than one rank, else [`World::solo`]. Built without the `mpi` feature, a process
    /// that `mpirun` started as one of several is refused (each would train alone and they
    /// would overwrite each other's checkpoints).
    pub fn from_env() -> Result<World> {
        match launcher_world_size() {
            Some(n) if n > 1 => Self::mpi(n),
            _ => Ok(World::solo()),
        }
    }

    #[cfg(feature = "mpi")]
    fn mpi(_launcher_size: usize) -> Result<World> {
        World::start(super::mpi_backend::MpiBackend::init)
    }

    #[cfg(not(feature = "mpi"))]
    fn mpi(n: usize) -> Result<World> {
        Err(Error::usage(
            "mpirun",
            format!(
                "this process is one of {n} ranks, but this gpt was built without MPI; build it with `cargo build --release --features mpi` (see README, Data-parallel training)"
            ),
        ))
    }

    /// A world whose backend `init` makes on the communication thread (MPI must be initialised
    /// on the thread that calls it).
    pub fn start<B, F>(init: F) -> Result<World>
    where
        B: Backend + 'static,
        F: FnOnce() -> Result<B> + Send + 'static,
    {
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (ready_tx, ready_rx) = channel::<Result<(usize, usize)>>();
        let thread = std::thread::Builder::new()
            .name("gpt-comm".into())
            .spawn(move || {
                let mut backend = match init() {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((backend.rank(), backend.size())));
                serve(&mut backend, jobs_rx);
            })
            .map_err(|e| Error::usage("data parallel", format!("cannot start a thread: {e}")))?;
        let (rank, size) = ready_rx.recv().map_err(|_| lost())??;
        Ok(World {
            comm: Some(Arc::new(Comm {
                rank,
                size,
                jobs: Mutex::new(Some(jobs_tx)),
                thread: Mutex::new(Some(thread)),
            })),
        })
    }

    /// This process's rank (0 for one rank).
    pub fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, |c| c.rank)
    }

    /// The number of ranks (1 for one rank).
    pub fn size(&self) -> usize {
        self.comm.as_ref().map_or(1, |c| c.size)
    }

    /// Whether this is rank 0, the one that logs, evaluates and writes checkpoints.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    fn send(&self, job: Job) -> Result<()> {
        let comm = self.comm.as_ref().ok_or_else(lost)?;
        let jobs = comm.jobs.lock().map_err(|_| lost())?;
        jobs.as_ref()
            .ok_or_else(lost)?
            .send(job)
            .map_err(|_| lost())
    }

    /// Queues `Σ over ranks of data` and returns at once; [`Pending::wait`] gives the sum.
    pub fn post_all_reduce_sum(&self, data: Vec<f32>) -> Result<Pending<Vec<f32>>> {
        if self.comm.is_none() {
            return Ok(Pending {
                rx: None,
                ready: Some(data),
            });
        }
        let (tx, rx) = channel();
        self.send(Job::AllReduceSum(data, tx))?;
        Ok(Pending {
            rx: Some(rx),
            ready: None,
        })
    }

    /// `Σ over ranks of data`.
    pub fn all_reduce_sum(&self, data: Vec<f32>) -> Result<Vec<f32>> {
        self.post_all_reduce_sum(data)?.wait()
    }

    /// `op` over ranks of `data` (losses, token counts, stop flags).
    pub fn all_reduce_f64(&self, data: Vec<f64>, op: ReduceOp) -> Result<Vec<f64>> {
        if self.comm.is_none() {
            return Ok(data);
        }
        let (tx, rx) = channel();
        self.send(Job::AllReduceF64(data, op, tx))?;
        rx.recv().map_err(|_| lost())
    }

    /// Every rank's `value`, in rank order.
    pub fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        if self.comm.is_none() {
            return Ok(vec![value]);
        }
        let (tx, rx) = channel();
        self.send(Job::AllGatherU64(value, tx))?;
        rx.recv().map_err(|_| lost())
    }

    /// The concatenation of every rank's `mine` (rank `r` gives `counts[r]` values).
    pub fn all_gather_varcount(&self, mine: Vec<f32>, counts: Vec<usize>) -> Result<Vec<f32>> {
        if counts.len() != self.size() || counts.get(self.rank()) != Some(&mine.len()) {
            return Err(Error::shape(
                "World::all_gather_varcount",
                format!("{} values with counts {counts:?}", mine.len()),
                format!(
                    "one count per rank ({}), this rank's = its values",
                    self.size()
                ),
            ));
        }
        if self.comm.is_none() {
            return Ok(mine);
        }
        let (tx, rx) = channel();
        self.send(Job::AllGatherVarcount(mine, counts, tx))?;
        rx.recv().map_err(|_| lost())
    }

    /// Runs `f` on rank 0 first and on the other ranks once it is done (a barrier between):
    /// for work that rank 0 writes into a directory the ranks may share (claiming the output
    /// directory, preparing data, training a tokenizer) and the others then find there. Alone,
    /// just `f`.
    pub fn root_first<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.is_root() {
            let out = f()?;
            self.barrier()?;
            Ok(out)
        } else {
            self.barrier()?;
            f()
        }
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<()> {
        if self.comm.is_none() {
            return Ok(());
        }
        let (tx, rx) = channel();
        self.send(Job::Barrier(tx))?;
        rx.recv().map_err(|_| lost())
    }

    /// Ends this world: the communication thread stops and drops the backend (MPI_Finalize),
    /// after every collective queued before. Call once the run is over on every rank; clones
    /// (such as [`World::current`]'s) cannot be used for collectives afterwards.
    pub fn finish(&self) {
        if let Some(comm) = &self.comm {
            comm.close();
        }
    }

    /// Ends every rank of the job with exit status `code` (after this rank printed why): the
    /// others may be waiting in a collective this rank will never join. Returns only for one
    /// rank.
    pub fn abort(&self, code: i32) {
        if self.send(Job::Abort(code)).is_ok() {
            // The backend ends the process; give it the time to.
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
    }
}

/// The communication thread's loop: one job at a time, in the order they came.
fn serve<B: Backend>(backend: &mut B, jobs: Receiver<Job>) {
    // The receive buffer of the next all-reduce: the last one's send buffer, whose pages are
    // already mapped (a fresh buffer per bucket costs a page fault per 4 KiB, which at 16 MiB
    // buckets took longer than the transfer).
    let mut spare: Vec<f32> = Vec::new();
    while let Ok(job) = jobs.recv() {
        match job {
            Job::AllReduceSum(send, reply) => {
                let mut recv = std::mem::take(&mut spare);
                recv.clear();
                recv.resize(send.len(), 0.0);
                backend.all_reduce_sum_f32(&send, &mut recv);
                let _ = reply.send(recv);
                spare = send;
            }
            Job::AllReduceF64(send, op, reply) => {
                let mut recv = vec![0.0; send.len()];
                backend.all_reduce_f64(&send, &mut recv, op);
                let _ = reply.send(recv);
            }
            Job::AllGatherU64(v, reply) => {
                let _ = reply.send(backend.all_gather_u64(v));
            }
            Job::AllGatherVarcount(mine, counts, reply) => {
                let _ = reply.send(backend.all_gather_varcount_f32(&mine, &counts));
            }
            Job::Barrier(reply) => {
                backend.barrier();
                let _ = reply.send(());
            }
            Job::Abort(code) => backend.abort(code),
        }
    }
}
