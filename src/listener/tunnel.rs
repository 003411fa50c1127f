//! Copying bytes both ways between two connections (passthrough tunnels, upgraded connections),
//! bounded by an idle timeout: a tunnel on which nothing moves for the idle period is closed at
//! both ends instead of holding two sockets and a connection slot forever.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

const BUFFER_BYTES: usize = 16 * 1024;

/// How a tunnel ended.
#[derive(Debug)]
pub enum TunnelEnd {
    /// Both sides finished (EOF each way); bytes copied from `a` to `b` and from `b` to `a`.
    Closed { a_to_b: u64, b_to_a: u64 },
    /// No byte moved in either direction for the idle period.
    Idle,
    /// A read or write failed (a reset, usually).
    Failed(io::Error),
}

/// Copy `a` ⇄ `b` until both directions reach EOF, either fails, or nothing moves either way for
/// `idle`. A half-close is passed on (EOF from one side shuts down writing to the other) and the
/// other direction keeps going. Both connections are dropped, and so closed, when this returns.
pub async fn copy_bidirectional_idle<A, B>(a: A, b: B, idle: Duration) -> TunnelEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let both = async { tokio::try_join!(copy_one_way(&mut a_read, &mut b_write, &activity), copy_one_way(&mut b_read, &mut a_write, &activity)) };
    tokio::select! {
        copied = both => match copied {
            Ok((a_to_b, b_to_a)) => TunnelEnd::Closed { a_to_b, b_to_a },
            Err(e) => TunnelEnd::Failed(e),
        },
        () = activity.idle_for(idle) => TunnelEnd::Idle,
    }
}

async fn copy_one_way<R, W>(from: &mut R, to: &mut W, activity: &Activity) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(total);
        }
        activity.touch();
        // A write the peer never drains is no activity: the tunnel still times out.
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        activity.touch();
        total += n as u64;
    }
}

/// When bytes last moved, shared by both directions (atomic, so the tunnel future stays `Send`).
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn since_last(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let quiet = self.since_last();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn bytes_flow_both_ways_and_eof_ends_the_tunnel() {
        let (agent, a) = duplex(64);
        let (upstream, b) = duplex(64);
        let tunnel = tokio::spawn(copy_bidirectional_idle(a, b, Duration::from_secs(5)));
        let (mut agent_r, mut agent_w) = tokio::io::split(agent);
        let (mut up_r, mut up_w) = tokio::io::split(upstream);
        agent_w.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        up_r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        up_w.write_all(b"pong!").await.unwrap();
        let mut got = [0u8; 5];
        agent_r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong!");
        // Half-close from the agent reaches the upstream, which can still answer.
        agent_w.shutdown().await.unwrap();
        let mut rest = Vec::new();
        up_r.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        up_w.write_all(b"bye").await.unwrap();
        up_w.shutdown().await.unwrap();
        let mut rest = Vec::new();
        agent_r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
        match tunnel.await.unwrap() {
            TunnelEnd::Closed { a_to_b, b_to_a } => assert_eq!((a_to_b, b_to_a), (4, 8)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_quiet_tunnel_is_closed_after_the_idle_period_and_traffic_resets_the_clock() {
        let (agent, a) = duplex(64);
        let (upstream, b) = duplex(64);
        let started = tokio::time::Instant::now();
        let tunnel = tokio::spawn(copy_bidirectional_idle(a, b, Duration::from_millis(400)));
        let (mut agent_r, mut agent_w) = tokio::io::split(agent);
        let (mut up_r, _up_w) = tokio::io::split(upstream);
        // Quiet for most of the idle period, then one byte: the clock starts again.
        tokio::time::sleep(Duration::from_millis(250)).await;
        agent_w.write_all(b"x").await.unwrap();
        let mut got = [0u8; 1];
        up_r.read_exact(&mut got).await.unwrap();
        let end = tunnel.await.unwrap();
        assert!(matches!(end, TunnelEnd::Idle), "{end:?}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(650) && waited < Duration::from_secs(3), "closed after {waited:?}");
        // Both ends see the close.
        let mut rest = Vec::new();
        assert_eq!(agent_r.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(up_r.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
