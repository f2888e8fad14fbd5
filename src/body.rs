//! Bodies sent a piece at a time, each piece written only when the connection has taken the
//! one before: large answers (`/metrics`) and InfluxDB writes never sit whole in memory.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;

/// Hands hyper one piece per turn: before each it answers "not yet" once (and wakes the task
/// at once), so hyper writes out what it holds before it asks for the next. Offered pieces as
/// fast as it asks, hyper copies or queues them up to its own limit before it writes (about
/// 400 KB, or 16 pieces): at 2,000 meters (heaptrack) an InfluxDB write held 760 KiB in
/// hyper's buffer and a `/metrics` answer 900 KiB. One piece at a time it holds about one,
/// unless the peer reads slower than meterd writes. The cost is one more turn of the task per
/// piece, so pieces should be tens of kilobytes, not a few bytes.
pub struct PieceByPiece<I> {
    pieces: I,
    gave_way: bool,
}

impl<I> PieceByPiece<I> {
    pub fn new(pieces: I) -> PieceByPiece<I> {
        PieceByPiece {
            pieces,
            gave_way: false,
        }
    }
}

impl<I, P> futures::Stream for PieceByPiece<I>
where
    I: Iterator<Item = P> + Unpin,
    P: Into<Bytes>,
{
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.gave_way {
            self.gave_way = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.gave_way = false;
        Poll::Ready(self.pieces.next().map(|p| Ok(p.into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::Stream;
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    #[derive(Default)]
    struct Woken(AtomicUsize);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_body_offers_one_piece_per_turn_and_wakes_itself_between() {
        let woken = Arc::new(Woken::default());
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut body = PieceByPiece::new(["a\n".to_string(), "b\n".to_string()].into_iter());
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(match Pin::new(&mut body).poll_next(&mut cx) {
                Poll::Pending => "pending".to_string(),
                Poll::Ready(Some(Ok(b))) => String::from_utf8_lossy(&b).into_owned(),
                Poll::Ready(None) => "end".to_string(),
            });
        }
        assert_eq!(seen, ["pending", "a\n", "pending", "b\n", "pending", "end"]);
        assert_eq!(
            woken.0.load(Ordering::Relaxed),
            3,
            "every \"not yet\" wakes the task, so the body goes on"
        );
    }
}
