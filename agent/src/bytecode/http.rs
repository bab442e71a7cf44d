//! The HTTP side that url downloads and image pulls share: one ureq agent configuration (the
//! source policy on every connection, bounded redirects and headers, https kept once started on
//! it), one time bound per object's fetch, one retry policy, and ureq's errors in words.

use std::time::{Duration, Instant};

use super::Fetcher;
use super::policy::{PolicyResolver, REFUSED};
use crate::error::Reason;

/// The most redirects a download follows.
pub(crate) const MAX_REDIRECTS: u32 = 5;
/// The largest response head (status line and headers) accepted.
pub(crate) const MAX_HEADER_BYTES: usize = 64 << 10;

/// The clock of one object's fetch: what is left of [`Fetcher::deadline`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    start: Instant,
    bound: Duration,
}

impl Deadline {
    pub(crate) fn start(bound: Duration) -> Self {
        Self {
            start: Instant::now(),
            bound,
        }
    }

    /// What is left, if anything.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.bound
            .checked_sub(self.start.elapsed())
            .filter(|d| !d.is_zero())
    }

    pub(crate) fn bound(&self) -> Duration {
        self.bound
    }

    /// Sleeps `d`, or until the deadline if that is sooner; false when nothing is left after.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        match self.remaining() {
            Some(left) => {
                std::thread::sleep(d.min(left));
                self.remaining().is_some()
            }
            None => false,
        }
    }
}

/// `60 s`, `1.5 s`: a duration for messages.
pub(crate) fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Whether an error of ureq will not go away by trying again: a refused address, a redirect
/// loop or a redirect to a scheme or address not allowed.
pub(crate) fn is_final(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => io.to_string().contains(REFUSED),
        ureq::Error::TooManyRedirects
        | ureq::Error::RequireHttpsOnly(_)
        | ureq::Error::BadUri(_)
        | ureq::Error::Http(_) => true,
        _ => false,
    }
}

/// The reason of a final error: `SourceNotAllowed` for a refused address.
pub(crate) fn final_reason(e: &ureq::Error) -> Reason {
    match e {
        ureq::Error::Io(io) if io.to_string().contains(REFUSED) => Reason::SourceNotAllowed,
        _ => Reason::BytecodeUnavailable,
    }
}

/// Describes an error of ureq in words a user acts on.
pub(crate) fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::TooManyRedirects => {
            format!("more than {MAX_REDIRECTS} redirects (a redirect loop?)")
        }
        ureq::Error::RequireHttpsOnly(why) => format!(
            "refused to leave https ({why}): plain http is only allowed for a source that starts on it"
        ),
        ureq::Error::Timeout(_) => "timed out".to_owned(),
        ureq::Error::Io(io) if io.to_string().contains(REFUSED) => io.to_string(),
        e => e.to_string(),
    }
}

/// An HTTP agent for downloads: the source policy on every connection (redirects and token
/// services included), no proxy (the policy could not see where it connects), bounded redirects
/// and headers, https kept once started on it.
pub(crate) fn agent(fetcher: &Fetcher, https_only: bool) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(fetcher.connect_timeout))
        .timeout_global(Some(fetcher.timeout))
        .http_status_as_error(false)
        .https_only(https_only)
        .proxy(None)
        .max_redirects(MAX_REDIRECTS)
        .max_response_header_size(MAX_HEADER_BYTES)
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        PolicyResolver::new(fetcher.policy.clone()),
    )
}

/// How one request of a fetch ended, when it did not succeed.
pub(crate) enum Attempt<E> {
    /// Worth another try: a transport error (`transport`), or a 429 or 5xx answer.
    Retry { why: String, transport: bool },
    /// Trying again would not help.
    Fatal(E),
}

/// Why [`retry`] gave up on a request that kept failing retryably.
pub(crate) struct GaveUp {
    /// How many requests were made.
    pub(crate) tries: u32,
    /// The last failure, in words.
    pub(crate) last: String,
    /// The last failure was a transport error, not an answer.
    pub(crate) transport: bool,
    /// The fetch's time bound ran out.
    pub(crate) timed_out: bool,
}

/// The one retry policy of url downloads and image pulls: up to `attempts` requests, 200 ms
/// doubling between them, all within `deadline`. `once` gets the time left for its request and
/// its 1-based attempt number.
pub(crate) fn retry<T, E>(
    attempts: u32,
    deadline: &Deadline,
    mut once: impl FnMut(Duration, u32) -> Result<T, Attempt<E>>,
) -> Result<T, Result<E, GaveUp>> {
    let mut gave_up = GaveUp {
        tries: 0,
        last: String::new(),
        transport: false,
        timed_out: false,
    };
    for attempt in 0..attempts.max(1) {
        if attempt > 0 && !deadline.sleep(Duration::from_millis(200 << (attempt - 1))) {
            break;
        }
        let Some(left) = deadline.remaining() else {
            break;
        };
        gave_up.tries += 1;
        match once(left, attempt + 1) {
            Ok(done) => return Ok(done),
            Err(Attempt::Fatal(e)) => return Err(Ok(e)),
            Err(Attempt::Retry { why, transport }) => {
                gave_up.last = why;
                gave_up.transport = transport;
            }
        }
    }
    gave_up.timed_out = deadline.remaining().is_none();
    Err(Err(gave_up))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_that_starts_on_https_never_goes_to_plain_http() {
        // The check ureq makes on every hop, redirects included, before any connection.
        let e = agent(&Fetcher::default(), true)
            .get("http://127.0.0.1:1/x.o")
            .call()
            .expect_err("refused");
        assert!(matches!(e, ureq::Error::RequireHttpsOnly(_)), "{e}");
        assert!(is_final(&e));
        assert!(
            describe(&e).starts_with("refused to leave https"),
            "{}",
            describe(&e)
        );
    }

    #[test]
    fn a_fetch_stops_at_its_deadline() {
        let d = Deadline::start(Duration::from_millis(50));
        assert!(d.remaining().is_some());
        assert!(
            !d.sleep(Duration::from_secs(5)),
            "the sleep ends at the deadline"
        );
        assert_eq!(d.remaining(), None);
        assert_eq!(seconds(Duration::from_secs(60)), "60 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }
}
