//! File-system work off the runtime's threads: every blocking call a source makes (listing,
//! opening, reading, renaming, writing its checkpoint) runs on the blocking pool through
//! [`run`], so that a slow disk or network file system never stalls other tasks.

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The work was not run to its end: the runtime is shutting down and runs no more blocking
/// tasks. Not a fault of any file; the source is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the runtime is shutting down")]
pub(crate) struct Interrupted;

/// Starts `f` on the blocking pool of `on` at once; the future returns its result. A panic
/// in `f` is a bug and is passed on.
pub(crate) fn run<T, F>(
    on: &Handle,
    f: F,
) -> impl Future<Output = Result<T, Interrupted>> + Send + 'static + use<T, F>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    join(start(on, f))
}

/// Starts `f` on the blocking pool of `on` and returns its handle, to be awaited with
/// [`join`] (and asked meanwhile whether it finished). `f` runs in the caller's tracing span,
/// so that what it logs names its component.
pub(crate) fn start<T, F>(on: &Handle, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let span = tracing::Span::current();
    on.spawn_blocking(move || span.in_scope(f))
}

/// Waits for blocking work started with [`start`] and kept aside (to ask whether it is
/// finished meanwhile); a panic in it is passed on, as with [`run`].
pub(crate) async fn join<T>(task: JoinHandle<T>) -> Result<T, Interrupted> {
    match task.await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Interrupted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_result_comes_back() {
        assert_eq!(run(&Handle::current(), || 6 * 7).await, Ok(42));
    }

    #[test]
    fn work_cut_off_by_the_runtime_shutting_down_is_interrupted() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        drop(rt);
        let other = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(other.block_on(run(&handle, || 1)), Err(Interrupted));
    }

    #[tokio::test]
    #[should_panic(expected = "a bug")]
    async fn a_panic_is_passed_on() {
        let _ = run(&Handle::current(), || panic!("a bug")).await;
    }
}
