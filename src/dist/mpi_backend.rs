//! The MPI [`Backend`] (cargo feature `mpi`): Open MPI (or any MPI) through the `mpi` crate,
//! on `MPI_COMM_WORLD`. Created on the communication thread, which is then the only thread
//! that calls MPI (`MPI_THREAD_FUNNELED` suffices).

use super::comm::{Backend, ReduceOp};
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

/// MPI's world communicator (and the universe, whose drop calls `MPI_Finalize`).
pub struct MpiBackend {
    world: SimpleCommunicator,
    _universe: Universe,
}

impl MpiBackend {
    /// Initialises MPI on the calling thread.
    pub fn init() -> Result<MpiBackend> {
        let (universe, _level) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| Error::usage("mpirun", "MPI was already initialised"))?;
        Ok(MpiBackend {
            world: universe.world(),
            _universe: universe,
        })
    }
}

/// A count as MPI takes it. Buffers here are gradient buckets and parameter shards, far below
/// 2³¹ values; a larger one is a bug worth stopping on.
fn count(n: usize) -> Count {
    Count::try_from(n).expect("an MPI message of more than 2^31 values")
}

impl Backend for MpiBackend {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum_f32(&mut self, send: &[f32], recv: &mut [f32]) {
        self.world
            .all_reduce_into(send, recv, SystemOperation::sum());
    }

    fn all_reduce_f64(&mut self, send: &[f64], recv: &mut [f64], op: ReduceOp) {
        let op = match op {
            ReduceOp::Sum => SystemOperation::sum(),
            ReduceOp::Max => SystemOperation::max(),
        };
        self.world.all_reduce_into(send, recv, op);
    }

    fn all_gather_u64(&mut self, value: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size()];
        self.world.all_gather_into(&value, &mut all[..]);
        all
    }

    fn all_gather_varcount_f32(&mut self, mine: &[f32], counts: &[usize]) -> Vec<f32> {
        let total: usize = counts.iter().sum();
        let mut all = vec![0.0f32; total];
        let counts_c: Vec<Count> = counts.iter().map(|&c| count(c)).collect();
        let displs: Vec<Count> = counts
            .iter()
            .scan(0usize, |at, &c| {
                let d = *at;
                *at += c;
                Some(count(d))
            })
            .collect();
        {
            let mut part = PartitionMut::new(&mut all[..], &counts_c[..], &displs[..]);
            self.world.all_gather_varcount_into(mine, &mut part);
        }
        all
    }

    fn barrier(&mut self) {
        self.world.barrier();
    }

    fn abort(&mut self, code: i32) {
        self.world.abort(code)
    }
}
