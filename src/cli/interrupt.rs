//! Stopping a training run on a signal: the first SIGINT (Ctrl-C) or SIGTERM (what `kill`,
//! `timeout` and job schedulers send) asks the loop to finish its step and save a checkpoint; a
//! second one quits at once. A run stopped this way exits with 128 + the signal number (130 for
//! SIGINT, 143 for SIGTERM), the shell's convention, so a script can tell it from a finished
//! run (0) and from a failed one (1).
//!
//! Why `signal-hook` and not `ctrlc` (still used where signal-hook is not available): ctrlc's
//! handler is not told which signal arrived, so SIGINT and SIGTERM could not get their own exit
//! statuses. signal-hook's iterator delivers the signal number on an ordinary thread, where
//! printing and setting flags is safe; no handler code of ours runs in signal context.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

/// The stop request of a training command: a flag the loop polls between steps, and the signal
/// that set it.
pub struct StopSignal {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicI32>,
}

/// What the first signal says in a training command.
pub const CHECKPOINT_MESSAGE: &str =
    "interrupt: finishing this step and saving a checkpoint (Ctrl-C again to quit now)";

impl StopSignal {
    /// [`StopSignal::install`] with [`CHECKPOINT_MESSAGE`]: the stop of the training commands.
    pub fn for_training() -> StopSignal {
        StopSignal::install(CHECKPOINT_MESSAGE)
    }

    /// The loop's options of a training command: `json`, `resume` and `overwrite` as given,
    /// this signal as its interrupt, progress shown, no step limit and no memory check (a
    /// command that has those sets them over these), in this process's world
    /// ([`gpt::dist::World::current`]: ranks other than 0 are quiet).
    pub fn train_options(
        &self,
        json: bool,
        resume: bool,
        overwrite: bool,
    ) -> gpt::train::TrainOptions {
        let world = gpt::dist::World::current();
        let root = world.is_root();
        gpt::train::TrainOptions {
            json: json && root,
            resume,
            overwrite,
            quiet: !root,
            stop_at: None,
            interrupt: Some(self.flag()),
            check_memory: false,
            world,
            zero1: false,
        }
    }

    /// Installs the handler for SIGINT and SIGTERM. If it cannot be installed, the signals keep
    /// their default action (the process ends; the last checkpoint stays intact).
    pub fn install(message: &'static str) -> StopSignal {
        let stop = StopSignal {
            flag: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicI32::new(0)),
        };
        let (flag, signal) = (stop.flag.clone(), stop.signal.clone());
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGINT, SIGTERM};
            if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
                let _ = std::thread::Builder::new()
                    .name("stop-signal".into())
                    .spawn(move || {
                        for sig in signals.forever() {
                            on_signal(&flag, &signal, sig, message);
                        }
                    });
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrlc::set_handler(move || on_signal(&flag, &signal, 2, message));
        }
        stop
    }

    /// The flag the training loop polls ([`gpt::train::TrainOptions::interrupt`]).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// Exits with 128 + the signal if a signal stopped the run before its last step
    /// (`stopped_early`); returns otherwise.
    pub fn exit_if_stopped(&self, stopped_early: bool) {
        let sig = self.signal.load(Ordering::SeqCst);
        if stopped_early && sig != 0 {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::process::exit(128 + sig);
        }
    }
}

/// The first signal records itself and raises the flag; a second one exits at once.
fn on_signal(flag: &AtomicBool, signal: &AtomicI32, sig: i32, message: &str) {
    if signal.swap(sig, Ordering::SeqCst) != 0 {
        std::process::exit(128 + sig);
    }
    flag.store(true, Ordering::SeqCst);
    eprintln!("\n{message}");
}
