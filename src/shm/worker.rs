//! A background thread per process for memory housekeeping that must not
//! run on the caller's time: unmapping detached page tables (`detach`) and
//! faulting in store memory ahead of the allocator (`populate`).
//!
//! The thread starts on the first job, also in a forked child (a child
//! inherits the parent's queue but not its thread), and exits once its
//! queue stayed empty for a second: a process keeps no thread of ours while
//! it does not need one (forking a process with threads is what Python
//! warns about).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long a worker waits for more work before it exits.
const IDLE: Duration = Duration::from_secs(1);

/// One kind of background job, run by a thread of its own.
pub(super) struct Worker<T: Send + 'static> {
    name: &'static str,
    /// After a job arrives, the thread waits for a pause this long in the
    /// arrivals and then runs everything that came (zero: at once).
    quiet: Duration,
    run: fn(Vec<T>),
    handle: Mutex<Option<Handle<T>>>,
    generation: AtomicU64,
}

/// The running thread: its process, a number telling it from the threads
/// before it, and its queue.
struct Handle<T> {
    pid: u32,
    generation: u64,
    queue: Sender<T>,
}

impl<T: Send + 'static> Worker<T> {
    pub(super) const fn new(name: &'static str, quiet: Duration, run: fn(Vec<T>)) -> Self {
        Worker {
            name,
            quiet,
            run,
            handle: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    fn handle(&self) -> MutexGuard<'_, Option<Handle<T>>> {
        self.handle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`, starting the thread if this process has none; runs it
    /// here when no thread can be started.
    pub(super) fn send(&'static self, job: T) {
        let pid = std::process::id();
        let mut guard = self.handle();
        if guard.as_ref().is_none_or(|h| h.pid != pid) {
            let (tx, rx) = channel::<T>();
            let generation = self.generation.fetch_add(1, Ordering::Relaxed);
            let started = std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || self.serve(&rx, generation));
            *guard = started.ok().map(|_| Handle {
                pid,
                generation,
                queue: tx,
            });
        }
        let sent = match guard.as_ref() {
            Some(h) => h.queue.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        drop(guard);
        if let Err(job) = sent {
            (self.run)(vec![job]);
        }
    }

    /// The thread's loop. Senders send while holding the handle's lock, and
    /// the thread retires (drops the queue's sender) under the same lock
    /// after seeing the queue empty, so nothing sent is left behind.
    fn serve(&self, rx: &Receiver<T>, generation: u64) {
        loop {
            let first = match rx.recv_timeout(IDLE) {
                Ok(job) => job,
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    let mut guard = self.handle();
                    match rx.try_recv() {
                        Ok(job) => job,
                        Err(_) => {
                            if guard.as_ref().is_some_and(|h| h.generation == generation) {
                                *guard = None;
                            }
                            return;
                        }
                    }
                }
            };
            let mut batch = vec![first];
            if self.quiet.is_zero() {
                batch.extend(rx.try_iter());
            } else {
                while let Ok(more) = rx.recv_timeout(self.quiet) {
                    batch.push(more);
                }
            }
            (self.run)(batch);
        }
    }
}
