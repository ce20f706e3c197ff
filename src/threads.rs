//! Thread control: `--threads N`, else `RAYON_NUM_THREADS`, else all cores.

use crate::error::{Error, Result};

/// Sets the size of rayon's global pool once. `None` keeps rayon's default, which honours
/// `RAYON_NUM_THREADS` and otherwise uses all cores. Calling it again is a no-op.
pub fn init(threads: Option<usize>) -> Result<()> {
    let Some(n) = threads else { return Ok(()) };
    if n == 0 {
        return Err(Error::Config {
            field: "threads".into(),
            reason: "must be at least 1".into(),
        });
    }
    // A second initialisation fails harmlessly (the pool already exists): ignore it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    Ok(())
}

/// Number of threads kernels will use.
pub fn current() -> usize {
    rayon::current_num_threads()
}
