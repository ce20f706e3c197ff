//! Thread control: `--threads N`, else `RAYON_NUM_THREADS`, else all cores.

use crate::error::{Error, Result};

/// Sets the size of rayon's global pool once. `None` keeps rayon's default, which honours
/// `RAYON_NUM_THREADS` and otherwise uses all cores. A count above the cores is capped to the
/// cores with a warning on standard error (more threads than cores only adds switching, and a
/// huge count would spend minutes spawning threads). Calling it again is a no-op.
pub fn init(threads: Option<usize>) -> Result<()> {
    let Some(n) = threads else { return Ok(()) };
    let (n, warning) = cap(n, cores())?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    // A second initialisation fails harmlessly (the pool already exists): ignore it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    Ok(())
}

/// Runs `f` on a worker of rayon's global pool and returns its result (the calling thread
/// waits). Why: a parallel kernel called from a thread outside the pool hands both halves to
/// the pool's workers and parks the caller until they finish, a sleep and a wake-up per call;
/// called from a worker, it runs one half itself while the other worker takes the second.
/// With a few dozen kernel calls per decoded token that switching cost 12% of a batch-8
/// decoding step on 2 cores (measured with `perf` under `gpt bench serve`).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Cores this process may run on (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--threads requested` on a machine with `cores` cores: the count to use, and a warning when
/// it was capped. Zero is an error naming the flag.
pub fn cap(requested: usize, cores: usize) -> Result<(usize, Option<String>)> {
    if requested == 0 {
        return Err(Error::field("--threads", "must be at least 1"));
    }
    let cores = cores.max(1);
    if requested > cores {
        return Ok((
            cores,
            Some(format!(
                "--threads {requested} is more than the {cores} cores here; using {cores}"
            )),
        ));
    }
    Ok((requested, None))
}

/// Number of threads kernels will use.
pub fn current() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_above_the_cores_are_capped_with_a_warning() {
        assert_eq!(cap(2, 8).unwrap(), (2, None));
        assert_eq!(cap(8, 8).unwrap(), (8, None));
        let (n, w) = cap(1_000_000, 8).unwrap();
        assert_eq!(n, 8);
        let w = w.unwrap();
        assert!(
            w.contains("--threads 1000000") && w.contains("8 cores"),
            "{w}"
        );
        assert!(cap(0, 8).unwrap_err().to_string().contains("--threads"));
    }
}
