//! Writes a socket's queued text frames in bursts: the frames queued while
//! the last write went out are fed together and flushed once, as a busy
//! client or server would, so a burst costs one write instead of one per
//! frame. A lone frame still goes at once. The load clients and the bare
//! relay both write this way, so neither side of the baseline ratio pays a
//! cost the other does not.

use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc::UnboundedReceiver;

/// Writes every frame from `queue` to `sink` (each made with `frame`)
/// until the queue closes or the sink fails.
pub async fn write_bursts<S, M>(
    mut queue: UnboundedReceiver<String>,
    mut sink: S,
    frame: impl Fn(String) -> M,
) where
    S: Sink<M> + Unpin,
{
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(text) = next.take().or_else(|| queue.try_recv().ok()) {
            if sink.feed(frame(text)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}
