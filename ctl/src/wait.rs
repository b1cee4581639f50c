//! "Wait until ...": one polling loop with a deadline and a description ([`wait_for`]), and the
//! cluster conditions commands and tests wait on, written once on top of it: a channel has a
//! leader ([`leader`]), its leader changed ([`leader_changed`]), its replicas agree
//! ([`replicas_agree`], by `wk_api::ChannelReplicas::agreement`), a node's replica caught up
//! ([`caught_up`]), and a request finally succeeds ([`retry`]).
//!
//! A condition is checked at once and then every `Poll::every` until it holds or
//! `Poll::within` has passed; a timeout names what was awaited, for how long, and the last
//! thing seen. Never a fixed sleep in place of a condition.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use wk_api::{Agreement, ChannelConfig, ChannelReplicas, Client, ClientError};

/// How long to wait and how often to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    /// Give up once this has passed since the first check.
    pub within: Duration,
    /// Pause between two checks.
    pub every: Duration,
}

impl Poll {
    pub const fn new(within: Duration, every: Duration) -> Poll {
        Poll { within, every }
    }
}

/// What one check of a condition says: ready with a value, or not yet (with what was seen,
/// when there is something to say).
pub trait Check {
    type Ready;
    type Pending: fmt::Display + fmt::Debug + Send + Sync + 'static;
    fn check(self) -> Result<Self::Ready, Option<Self::Pending>>;
}

/// `Some(v)`: ready; `None`: not yet.
impl<T> Check for Option<T> {
    type Ready = T;
    type Pending = std::convert::Infallible;
    fn check(self) -> Result<T, Option<std::convert::Infallible>> {
        self.ok_or(None)
    }
}

/// `Ok(v)`: ready; `Err(e)`: not yet, and `e` is the last thing seen.
impl<T, E: fmt::Display + fmt::Debug + Send + Sync + 'static> Check for Result<T, E> {
    type Ready = T;
    type Pending = E;
    fn check(self) -> Result<T, Option<E>> {
        self.map_err(Some)
    }
}

/// A condition that did not hold in time.
#[derive(Debug)]
pub struct TimedOut<E> {
    /// What was awaited.
    pub what: String,
    pub within: Duration,
    /// The last thing the check saw, if it said.
    pub last: Option<E>,
}

impl<E: fmt::Display> fmt::Display for TimedOut<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {} waiting for {}",
            humantime::format_duration(self.within),
            self.what
        )?;
        match &self.last {
            Some(last) => write!(f, "; last: {last}"),
            None => Ok(()),
        }
    }
}

impl<E: fmt::Display + fmt::Debug> std::error::Error for TimedOut<E> {}

/// Runs `check` now and then every `poll.every` until it is ready or `poll.within` passed.
pub async fn wait_for<C, F, Fut>(
    what: impl Into<String>,
    poll: Poll,
    mut check: F,
) -> Result<C::Ready, TimedOut<C::Pending>>
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let deadline = Instant::now() + poll.within;
    loop {
        let last = match check().await.check() {
            Ok(v) => return Ok(v),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.into(),
                within: poll.within,
                last,
            });
        }
        tokio::time::sleep(poll.every).await;
    }
}

/// Repeats the request `f` every 50 ms until it succeeds or `within` passes (a cluster that
/// just started may not have a metadata leader yet).
pub async fn retry<T, F, Fut>(what: &str, within: Duration, f: F) -> Result<T, TimedOut<ClientError>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    wait_for(what, Poll::new(within, Duration::from_millis(50)), f).await
}

/// Until `client` reports a leader for the channel; answers its config.
pub async fn leader(
    client: &Client,
    channel: &str,
    channel_type: u8,
    poll: Poll,
) -> anyhow::Result<ChannelConfig> {
    Ok(wait_for(format!("a leader of {channel}"), poll, || async {
        match client.channel_config(channel, channel_type).await {
            Ok(c) if c.leader.is_some() => Ok(c),
            Ok(c) => Err(format!("no leader at term {}", c.term)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?)
}

/// Until `client` reports a leader of the channel other than `old`; answers it.
pub async fn leader_changed(
    client: &Client,
    channel: &str,
    channel_type: u8,
    old: u64,
    poll: Poll,
) -> anyhow::Result<u64> {
    Ok(wait_for(
        format!("a new leader of {channel} (not node {old})"),
        poll,
        || async {
            match client.channel_config(channel, channel_type).await {
                Ok(c) => c
                    .leader
                    .filter(|l| *l != old)
                    .ok_or_else(|| format!("leader {:?} at term {}", c.leader, c.term)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?)
}

/// Why a channel's replicas were not (yet) found to agree.
#[derive(Debug)]
pub enum NotAgreed {
    /// `GET .../replicas` failed.
    Unreadable(ClientError),
    /// The view as last read: converging, diverged, or fewer replicas than expected.
    Disagree(ChannelReplicas),
}

impl fmt::Display for NotAgreed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAgreed::Unreadable(e) => write!(f, "replicas unreadable: {e}"),
            NotAgreed::Disagree(r) => {
                let list: Vec<String> = r
                    .replicas
                    .iter()
                    .map(|x| {
                        format!(
                            "node {} online {} seq {} checksum {}",
                            x.node_id, x.online, x.message_seq, x.checksum
                        )
                    })
                    .collect();
                write!(f, "{}", list.join("; "))
            }
        }
    }
}

/// Until the channel's replicas agree ([`ChannelReplicas::agreement`]), and there are
/// `replicas` of them when given; answers the view. The error keeps the last view, so a
/// caller can count divergences.
pub async fn replicas_agree(
    client: &Client,
    channel: &str,
    channel_type: u8,
    replicas: Option<usize>,
    poll: Poll,
) -> Result<ChannelReplicas, TimedOut<NotAgreed>> {
    wait_for(format!("the replicas of {channel} to agree"), poll, || async {
        let r = client
            .channel_replicas(channel, channel_type)
            .await
            .map_err(NotAgreed::Unreadable)?;
        let count_ok = replicas.is_none_or(|n| r.replicas.len() == n);
        match r.agreement() {
            Agreement::Agree { .. } if count_ok => Ok(r),
            _ => Err(NotAgreed::Disagree(r)),
        }
    })
    .await
}

/// Until node `node`'s replica of the channel holds message seq `seq` (as `client` reports it).
pub async fn caught_up(
    client: &Client,
    channel: &str,
    channel_type: u8,
    node: u64,
    seq: u64,
    poll: Poll,
) -> anyhow::Result<()> {
    Ok(wait_for(
        format!("node {node}'s replica of {channel} to reach seq {seq}"),
        poll,
        || async {
            let r = client
                .channel_replicas(channel, channel_type)
                .await
                .map_err(|e| e.to_string())?;
            match r.replicas.iter().find(|x| x.node_id == node) {
                Some(x) if x.message_seq >= seq => Ok(()),
                Some(x) => Err(format!("at seq {}", x.message_seq)),
                None => Err(format!("node {node} is not a replica")),
            }
        },
    )
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_ready_and_says_what_timed_out() {
        let mut n = 0;
        let v = wait_for(
            "three calls",
            Poll::new(Duration::from_secs(5), Duration::ZERO),
            || {
                n += 1;
                let ready = n == 3;
                async move { ready.then_some(n) }
            },
        )
        .await
        .expect("ready on the third call");
        assert_eq!(v, 3);

        let err = wait_for(
            "the impossible",
            Poll::new(Duration::from_millis(30), Duration::from_millis(5)),
            || async { Err::<(), _>("still 7".to_string()) },
        )
        .await
        .expect_err("never ready");
        assert_eq!(
            err.to_string(),
            "timed out after 30ms waiting for the impossible; last: still 7"
        );
        assert_eq!(err.last.as_deref(), Some("still 7"));

        let err = wait_for("nothing", Poll::new(Duration::ZERO, Duration::ZERO), || async {
            None::<()>
        })
        .await
        .expect_err("checked once, then the deadline");
        assert_eq!(err.to_string(), "timed out after 0s waiting for nothing");
    }
}
