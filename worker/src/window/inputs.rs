//! The window task's inputs: one bounded channel per partition, read in
//! turn, except those held back by a checkpoint alignment.

use std::future::poll_fn;
use std::task::Poll;

use tokio::sync::mpsc;

use super::align::Aligner;
use crate::envelope::Envelope;

/// Channels by input index (see the module docs).
pub struct Inputs {
    channels: Vec<Option<mpsc::Receiver<Envelope>>>,
    /// Where the next round starts, so that no input starves the others.
    next: usize,
}

impl Inputs {
    pub fn new(channels: Vec<mpsc::Receiver<Envelope>>) -> Self {
        Inputs {
            channels: channels.into_iter().map(Some).collect(),
            next: 0,
        }
    }

    /// The next envelope of an input that `aligner` does not hold back;
    /// `None` once every channel is closed. While every open input is held
    /// it waits (cancel-safe: nothing is taken until it is returned).
    pub async fn recv(&mut self, aligner: &Aligner) -> Option<Envelope> {
        poll_fn(|cx| {
            let n = self.channels.len();
            let mut open = false;
            for k in 0..n {
                let i = (self.next + k) % n;
                let Some(rx) = self.channels[i].as_mut() else {
                    continue;
                };
                if aligner.is_held(i) {
                    open = true;
                    continue;
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(e)) => {
                        self.next = (i + 1) % n;
                        return Poll::Ready(Some(e));
                    }
                    Poll::Ready(None) => self.channels[i] = None,
                    Poll::Pending => open = true,
                }
            }
            if open {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn mark(input: u32) -> Envelope {
        Envelope::Idle { input }
    }

    fn barrier(input: u32, checkpoint: u64) -> Envelope {
        Envelope::Barrier {
            input,
            checkpoint,
            through: None,
            watermark: 0,
        }
    }

    #[tokio::test]
    async fn held_inputs_are_not_read_until_released() {
        let (tx0, rx0) = mpsc::channel(4);
        let (tx1, rx1) = mpsc::channel(4);
        let mut inputs = Inputs::new(vec![rx0, rx1]);
        let mut aligner = Aligner::new(2);
        tx0.send(barrier(0, 1)).await.expect("open");
        tx0.send(mark(0)).await.expect("open");
        let Some(Envelope::Barrier {
            input, checkpoint, ..
        }) = inputs.recv(&aligner).await
        else {
            panic!("the barrier comes first");
        };
        aligner.on_barrier(input as usize, checkpoint);
        // Input 0 is held: what follows its barrier waits.
        let waited = tokio::time::timeout(Duration::from_millis(50), inputs.recv(&aligner)).await;
        assert!(waited.is_err(), "a held input was read");
        // Input 1 is still read, in order.
        tx1.send(mark(1)).await.expect("open");
        tx1.send(barrier(1, 1)).await.expect("open");
        assert_eq!(inputs.recv(&aligner).await, Some(mark(1)));
        let Some(Envelope::Barrier { input, .. }) = inputs.recv(&aligner).await else {
            panic!("input 1's barrier");
        };
        assert_eq!(
            aligner.on_barrier(input as usize, 1).1,
            super::super::align::Step::Aligned(1)
        );
        // Released: input 0's held envelope comes now.
        assert_eq!(inputs.recv(&aligner).await, Some(mark(0)));
    }

    #[tokio::test]
    async fn inputs_take_turns_and_closed_ones_drop_out() {
        let (tx0, rx0) = mpsc::channel(8);
        let (tx1, rx1) = mpsc::channel(8);
        let mut inputs = Inputs::new(vec![rx0, rx1]);
        let aligner = Aligner::new(2);
        for _ in 0..3 {
            tx0.send(mark(0)).await.expect("open");
            tx1.send(mark(1)).await.expect("open");
        }
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(inputs.recv(&aligner).await.map(|e| e.input()));
        }
        assert_eq!(order, [Some(0), Some(1), Some(0), Some(1)]);
        drop(tx0);
        drop(tx1);
        assert_eq!(inputs.recv(&aligner).await.map(|e| e.input()), Some(0));
        assert_eq!(inputs.recv(&aligner).await.map(|e| e.input()), Some(1));
        assert_eq!(inputs.recv(&aligner).await, None);
    }
}
