//! The bodies the HTTP/1 engine moves, and the record of a request that ends with its
//! response body.
//!
//! - [`UpBody`]: a request body on its way to a backend. A body the client sends is
//!   read through [`Tee`], which keeps its first [`REPLAY_LIMIT`] bytes so that a request
//!   whose backend dropped it before answering can go to another backend whole.
//! - [`DownBody`]: a response body on its way to the client: the backend's (under
//!   `upstream_read_timeout` between pieces) or limpet's own. It carries the request's
//!   [`Record`], which is written when the body ends or is dropped: the in-flight slot
//!   is released, and the access log has the bytes sent, once the response is over.

use std::future::Future as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use pingora_error::ErrorType;
use tokio::time::Sleep;

use crate::attempt::Attempt;
use crate::deadline::Phase;
use crate::exchange::Via;
use crate::finish::{finish, Ended, LoggedHead};
use crate::shared::{Active, Shared};
use crate::snapshot::Snapshot;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The most of a request body kept for a replay (Pingora's retry buffer is the same).
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// A request body read from the client once and replayable to another backend.
#[derive(Default)]
pub struct TeeState {
    source: Option<Incoming>,
    /// The pieces read so far, while they fit in [`REPLAY_LIMIT`].
    kept: Vec<Kept>,
    kept_bytes: usize,
    /// More was read than `kept` holds: no replay.
    truncated: bool,
    /// The client's body ended.
    ended: bool,
    /// Body bytes read from the client.
    pub read: usize,
    /// When the client's last piece arrived (or the body started to be read).
    pub progress: Option<Instant>,
}

enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl TeeState {
    pub fn new(source: Incoming) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            source: Some(source),
            ..Self::default()
        }))
    }

    /// Whether what was read so far can be sent again from its start.
    pub fn replayable(&self) -> bool {
        !self.truncated
    }

    /// Whether the client has sent the whole body.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// One attempt's reading of a [`TeeState`]: the kept pieces first, then the client.
pub struct Tee {
    state: Arc<Mutex<TeeState>>,
    at: usize,
}

impl Tee {
    pub fn new(state: &Arc<Mutex<TeeState>>) -> Self {
        Self {
            state: state.clone(),
            at: 0,
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Ok(mut state) = this.state.lock() else {
            return Poll::Ready(Some(Err("request body state poisoned".into())));
        };
        if let Some(kept) = state.kept.get(this.at) {
            this.at += 1;
            let frame = match kept {
                Kept::Data(b) => Frame::data(b.clone()),
                Kept::Trailers(t) => Frame::trailers(t.clone()),
            };
            return Poll::Ready(Some(Ok(frame)));
        }
        let state = &mut *state;
        let Some(source) = state.source.as_mut() else {
            return Poll::Ready(None);
        };
        state.progress.get_or_insert_with(Instant::now);
        match Pin::new(source).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                state.progress = Some(Instant::now());
                let kept = if let Some(data) = frame.data_ref() {
                    state.read += data.len();
                    state.kept_bytes += data.len();
                    Kept::Data(data.clone())
                } else if let Some(trailers) = frame.trailers_ref() {
                    Kept::Trailers(trailers.clone())
                } else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                if state.kept_bytes <= REPLAY_LIMIT && !state.truncated {
                    state.kept.push(kept);
                    this.at = state.kept.len();
                } else {
                    state.truncated = true;
                    state.kept = Vec::new();
                    this.at = 0;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                state.ended = true;
                state.source = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.source.as_ref().is_none_or(Body::is_end_stream) && self.at >= s.kept.len())
    }

    fn size_hint(&self) -> SizeHint {
        let Ok(state) = self.state.lock() else {
            return SizeHint::default();
        };
        let kept: u64 = state.kept[self.at.min(state.kept.len())..]
            .iter()
            .map(|k| match k {
                Kept::Data(b) => b.len() as u64,
                Kept::Trailers(_) => 0,
            })
            .sum();
        let source = state
            .source
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        // Upper bound first: a lower bound above the upper one panics.
        let mut hint = SizeHint::new();
        if let Some(upper) = source.upper() {
            hint.set_upper(upper + kept);
        }
        hint.set_lower(source.lower() + kept);
        hint
    }
}

/// A request body on its way to a backend.
pub enum UpBody {
    Empty,
    Tee(Tee),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Tee(t) => Pin::new(t).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Tee(t) => t.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Tee(t) => t.size_hint(),
        }
    }
}

/// Everything the end of a request records ([`finish`]); written when dropped, which
/// is when its response body ended, or the client went away, or the tunnel closed.
pub struct Record {
    pub shared: Arc<Shared>,
    pub snap: Arc<Snapshot>,
    pub attempt: Attempt,
    pub via: Via,
    pub client: Option<IpAddr>,
    pub request_id: Option<HeaderValue>,
    /// What the access log writes of the request head, kept only when it is on.
    pub head: Option<LoggedHead>,
    pub arrived: Instant,
    pub connected: Option<Instant>,
    pub responded: Option<Instant>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub upstream_failure: Option<&'static str>,
    pub error: Option<&'static str>,
    pub body: Option<Arc<Mutex<TeeState>>>,
    pub bytes_out: usize,
    /// The connection's phase, told when the response is over; `None` once upgraded.
    pub phase: Option<Phase>,
    pub _active: Active,
}

impl Record {
    /// The backend failed after the connection was made (`kind`): the request's error,
    /// and a failure passive health counts.
    pub fn upstream_failed(&mut self, kind: ErrorType) {
        self.upstream_failure = Some(kind.as_str());
        self.error = self.upstream_failure;
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let bytes_in = self
            .body
            .as_ref()
            .and_then(|b| b.lock().ok().map(|b| b.read))
            .unwrap_or(0);
        let ended = Ended {
            head: self.head.as_ref().map(LoggedHead::logged),
            status: self.status,
            upstream_status: self.upstream_status,
            upstream_failure: self.upstream_failure,
            error: self.error,
            bytes_in,
            bytes_out: self.bytes_out,
            client: self.client,
            request_id: self.request_id.as_ref(),
            via: self.via,
            arrived: self.arrived,
            connected: self.connected,
            responded: self.responded,
        };
        finish(&self.shared, &self.snap, &mut self.attempt, &ended);
        if let Some(phase) = &self.phase {
            phase.next_request();
        }
    }
}

/// Where a response body comes from.
pub enum Source {
    /// The backend's, under its read timeout between pieces.
    Backend(Incoming),
    /// limpet's own (or nothing).
    Own(Option<Bytes>),
}

/// A response body on its way to the client, with the request's record.
pub struct DownBody {
    source: Source,
    /// The body's end was handed to the engine.
    ended: bool,
    /// `upstream_read_timeout`, and its timer while the backend is silent.
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    record: Option<Box<Record>>,
}

impl DownBody {
    /// limpet's own body (`None`: no body), which no backend's timeout concerns.
    pub fn own(body: Option<Bytes>, record: Option<Box<Record>>) -> Self {
        Self::new(Source::Own(body), Duration::ZERO, record)
    }

    pub fn new(source: Source, idle: Duration, record: Option<Box<Record>>) -> Self {
        Self {
            source,
            ended: false,
            idle,
            timer: None,
            record,
        }
    }

    /// The backend failed in the middle of its body: the error is recorded and the
    /// client's connection closes without the body's end, so a truncated response
    /// never looks complete.
    fn failed(&mut self, kind: ErrorType, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(mut record) = self.record.take() {
            record.upstream_failed(kind);
        }
        Poll::Ready(Some(Err(e)))
    }
}

impl Drop for DownBody {
    /// A backend's body dropped before its end: the client went away or stopped
    /// reading. The record says so (a body without content, as a `HEAD` answer's, is
    /// not cut).
    fn drop(&mut self) {
        if let (Some(record), Source::Backend(body), false) = (self.record.as_mut(), &self.source, self.ended)
        {
            if !body.is_end_stream() && record.error.is_none() {
                record.error = Some(ErrorType::ConnectionClosed.as_str());
            }
        }
    }
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.source {
            Source::Own(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Source::Backend(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => return this.failed(ErrorType::ReadError, e.into()),
                Poll::Ready(other) => {
                    this.timer = None;
                    Poll::Ready(other.map(|f| f.map_err(BoxError::from)))
                }
                Poll::Pending => {
                    let idle = this.idle;
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return this.failed(
                            ErrorType::ReadTimedout,
                            "backend silent for upstream_read_timeout".into(),
                        );
                    }
                    Poll::Pending
                }
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(record)) = (frame.data_ref(), this.record.as_mut()) {
                    record.bytes_out += data.len();
                }
            }
            // The end: recorded now, before the engine reads the next request.
            Poll::Ready(None) => {
                this.ended = true;
                this.record = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Own(b) => b.is_none(),
            Source::Backend(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Own(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Source::Backend(b) => b.size_hint(),
        }
    }
}
