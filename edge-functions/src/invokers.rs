//! The threads invocations run on. Each thread keeps one prepared context (the
//! engine's) and builds the next right after it has answered. Work goes to the
//! thread that became idle *last*: its caches are warm and it has most likely
//! finished preparing, whereas a thread idle for long must first be woken and
//! paged back in. (With a shared FIFO queue, sequential calls rotate through all
//! threads; on a 2-core machine that cost about 0.25 ms per call.)

use crate::engine::Engine;
use std::collections::VecDeque;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

/// One piece of work for an invoker thread, given the engine.
pub type Work = Box<dyn FnOnce(&dyn Engine) + Send>;

#[derive(Default)]
struct State {
    /// Idle threads' inboxes, the most recently idle last.
    idle: Vec<Sender<Work>>,
    /// Work that found no idle thread, oldest first.
    backlog: VecDeque<Work>,
}

pub struct Invokers {
    state: Arc<Mutex<State>>,
}

impl Invokers {
    /// Starts `threads` invoker threads running `engine`.
    pub fn start(engine: Arc<dyn Engine>, threads: usize) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        for n in 0..threads.max(1) {
            let (engine, state) = (engine.clone(), state.clone());
            std::thread::Builder::new()
                .name(format!("spine-fn-{n}"))
                .spawn(move || {
                    let (inbox, work) = channel::<Work>();
                    loop {
                        engine.prepare();
                        let next = {
                            let Ok(mut s) = state.lock() else { return };
                            match s.backlog.pop_front() {
                                Some(w) => Some(w),
                                None => {
                                    s.idle.push(inbox.clone());
                                    None
                                }
                            }
                        };
                        let job = match next {
                            Some(job) => job,
                            None => match work.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            },
                        };
                        job(engine.as_ref());
                    }
                })
                .expect("spawning an invoker thread");
        }
        Self { state }
    }

    /// Hands `work` to the most recently idle thread, or queues it.
    pub fn submit(&self, work: Work) {
        let mut s = self.state.lock().expect("invokers lock");
        let mut work = Some(work);
        while let Some(inbox) = s.idle.pop() {
            match inbox.send(work.take().expect("present")) {
                Ok(()) => return,
                // That thread is gone (it panicked): try the next one.
                Err(failed) => work = Some(failed.0),
            }
        }
        s.backlog.push_back(work.expect("present"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::QuickJs;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Every submitted piece of work runs exactly once, also when there are more
    /// than threads, and sequential work stays on one thread.
    #[test]
    fn runs_everything_once_and_reuses_the_last_idle_thread() {
        let invokers = Invokers::start(Arc::new(QuickJs), 3);
        std::thread::sleep(Duration::from_millis(200)); // all idle
        let ran = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = channel();
        for i in 0..50 {
            let (ran, tx) = (ran.clone(), tx.clone());
            invokers.submit(Box::new(move |_| {
                ran.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send((i, std::thread::current().name().map(String::from)));
            }));
        }
        let mut got: Vec<_> = (0..50)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort();
        assert_eq!(ran.load(Ordering::SeqCst), 50);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            (0..50).collect::<Vec<_>>()
        );
        // One at a time: each waits for the previous answer, as a single client does.
        let mut names = Vec::new();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(50)); // the thread prepares again
            let (tx, rx) = channel();
            invokers.submit(Box::new(move |_| {
                let _ = tx.send(std::thread::current().name().map(String::from));
            }));
            names.push(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        }
        assert!(names.windows(2).all(|w| w[0] == w[1]), "{names:?}");
    }
}
