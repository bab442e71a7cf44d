//! The wake-up of the pass loop, shared by every watch (Node, `BpfObject`s, ConfigMaps) and by
//! downloads that end after a pass stopped waiting for them.

use tokio::sync::mpsc;

/// Wakes the pass loop. Capacity one: a burst of events while a pass is pending is one wake-up.
#[derive(Debug, Clone)]
pub struct Trigger(mpsc::Sender<()>);

impl Trigger {
    /// A trigger and the receiver the pass loop waits on.
    pub fn new() -> (Self, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel(1);
        (Self(tx), rx)
    }

    /// Asks for a pass (no-op when one is already asked for).
    pub fn poke(&self) {
        let _ = self.0.try_send(());
    }
}
