//! All-reduce bandwidth of the data-parallel path (`gpt::dist::World`, the communication
//! thread and MPI, as training uses them), for bench/README.md's scaling projection:
//!
//! ```sh
//! cargo build --release --features mpi --example allreduce_probe
//! mpirun -np 2 target/release/examples/allreduce_probe
//! ```
//! Prints, per message size, the median time of an all-reduce of f32 sums and its bus bandwidth
//! (`2 (N-1)/N · bytes / time`, NCCL's convention: what each link carries in a ring).

use gpt::dist::World;
use std::time::Instant;

fn main() {
    let world = match World::from_env() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let n = world.size() as f64;
    if world.is_root() {
        println!("all-reduce (f32 sum) over {} ranks", world.size());
        println!("| values | MiB | median ms | bus GB/s |");
        println!("| ---: | ---: | ---: | ---: |");
    }
    for &values in &[1usize << 10, 1 << 14, 1 << 18, 1 << 20, 1 << 22, 1 << 24] {
        let reps = (64usize << 20) / (values * 4) + 3;
        let mut times = Vec::with_capacity(reps);
        // As the gradient reducer does: the buffer is refilled and reused, not reallocated.
        let mut buf = vec![1.0f32; values];
        for _ in 0..reps.min(200) {
            buf.fill(1.0);
            let t = Instant::now();
            buf = world.all_reduce_sum(buf).expect("an all-reduce failed");
            times.push(t.elapsed().as_secs_f64());
            assert_eq!(buf[0], n as f32);
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let bytes = (values * 4) as f64;
        if world.is_root() {
            println!(
                "| {values} | {:.3} | {:.3} | {:.2} |",
                bytes / (1 << 20) as f64,
                med * 1e3,
                2.0 * (n - 1.0) / n * bytes / med / 1e9
            );
        }
    }
}
