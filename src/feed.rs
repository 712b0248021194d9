//! One reader's feed: subscribe, replay what it missed, then stream live.
//!
//! The order is what makes resume lossless: subscribing first means nothing published
//! while history is read can be missed, and skipping every id at or below the cursor means
//! nothing is sent twice. A reader that falls behind the room's channel catches up from the
//! store the same way; if the store no longer holds what it missed it is told with a
//! `reset` event first. Heartbeats arrive through the room's channel, and the channel closes
//! when the server shuts down, which ends every feed: a stream waits on that channel, and
//! on the policy watcher, which ends the feed of a reader who lost access with `revoked`.

pub mod stall;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

use crate::auth::{Credential, Identity};
use crate::domain::{Author, MessageId, PresenceView, ReaderId, RoomName};
use crate::error::AppError;
use crate::hub::Subscription;
use crate::limits::Permit;
use crate::metrics::{Disconnect, Limited, Metrics, Reset as ResetReason};
use crate::policy::watch::{Need, Watched};
use crate::presence::Reader;
use crate::state::AppState;
use crate::store::{Range, Store, StoreError};
use crate::wire::{Event, Format, Frame};

/// Messages read from the store per query while replaying.
const REPLAY_PAGE: usize = 500;
/// How much a lagging stream gathers into one write.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// What a reader asked for.
#[derive(Debug, Clone)]
pub struct FeedRequest {
    pub room: RoomName,
    /// Replay everything after this id first (`Last-Event-ID` or `?since=`).
    pub resume_from: Option<MessageId>,
    pub format: Format,
    /// Who is reading, if they said (`?name=`): named in the room's presence.
    pub reader: Option<Author>,
    /// Which reader this is across reconnects (`?reader=`), so presence counts it once.
    pub reader_id: Option<ReaderId>,
    /// Whether to send presence and typing events too (`?presence=1`).
    pub presence: bool,
    /// Who is asking, for the per-client stream cap, IP bans and slow mode.
    pub client: std::net::IpAddr,
    /// Who is reading: the access rules decide whether they may, now and for as long as
    /// the stream lasts.
    pub identity: Identity,
    /// What signed the reader in (none for a guest): checked again when the directory changes.
    pub credential: Option<Credential>,
}

/// What a stream does with a frame from its room's channel.
enum Take {
    Send,
    Skip,
    /// An internal signal was noted (catch up, drain): this round of reading ends here.
    Stop,
}

/// The state a stream keeps between frames, as far as sorting frames goes.
#[derive(Default)]
struct Sorting {
    /// Whether to send presence, typing and room counts at all.
    presence: bool,
    /// The presence this stream was last told: only newer views with other people in them
    /// are sent after it.
    told: Option<PresenceView>,
    /// History must be read before anything live is sent.
    catching_up: bool,
    /// A drain (shutdown) asked for, to be started at the top of the loop.
    drain_request: Option<Duration>,
    /// The access rules changed: whether the reader may still read is looked at next.
    recheck: bool,
}

impl Sorting {
    /// Internal signals change the state; presence and typing go only to streams that asked
    /// (and a presence view only once); everything else is sent.
    fn take(&mut self, frame: &Frame) -> Take {
        match frame.event() {
            Event::Resync => {
                self.catching_up = true;
                Take::Stop
            }
            Event::Recheck => {
                self.recheck = true;
                Take::Stop
            }
            Event::Drain(window) => {
                self.drain_request = Some(*window);
                Take::Stop
            }
            Event::Presence(_) | Event::Typing { .. } | Event::Rooms(_) if !self.presence => Take::Skip,
            Event::Presence(view) => self.tell(view),
            _ => Take::Send,
        }
    }

    /// Too far behind the room's channel: what was missed is read from history, and since
    /// a missed frame may have been a [`Event::Recheck`], access is looked at again.
    fn lagged(&mut self) {
        self.catching_up = true;
        self.recheck = true;
    }

    /// A view older than the one last told (computed before it, so perhaps before this
    /// reader joined) is never sent; a newer one with the same people is noted, not sent.
    fn tell(&mut self, view: &PresenceView) -> Take {
        match &self.told {
            Some(told) if view.version <= told.version => Take::Skip,
            Some(told) if view.same_people(told) => {
                self.told = Some(view.clone());
                Take::Skip
            }
            _ => {
                self.told = Some(view.clone());
                Take::Send
            }
        }
    }
}

/// A stream request the connection already tried to open and was refused: the router
/// answers with this error rather than trying (and counting) again. A request extension.
#[derive(Clone)]
pub struct Refused(pub AppError);

/// Set when the connection cut its client off for not reading, so a stream served through
/// hyper counts as stalled in `/metrics`. A request extension.
#[derive(Clone)]
pub struct StallWatch(pub Arc<AtomicBool>);

/// Everything a feed needs from the app, taken once when the stream starts.
struct Shared {
    store: Arc<dyn Store>,
    retry: Duration,
    /// The least time between two writes to one stream (`--coalesce`).
    coalesce: Duration,
    metrics: Arc<Metrics>,
}

/// One reader's stream. [`Feed::next`] gives the bytes to write, in order; the fast path
/// writes them straight to the socket and the router wraps them in a body
/// ([`Feed::into_stream`]), so both paths send exactly the same thing.
pub struct Feed {
    shared: Shared,
    room: RoomName,
    format: Format,
    subscription: Subscription,
    /// The newest message id this reader has: nothing at or below it is sent again.
    cursor: MessageId,
    sorting: Sorting,
    /// The first write: the `retry:` preamble and the presence snapshot, if any.
    opening: Option<Bytes>,
    /// Messages in the last write and when the oldest was published: counted once the
    /// write is done, which is when the next one is asked for.
    written: Option<(u64, Option<std::time::Instant>)>,
    last_write: Option<Instant>,
    /// History could not be read (the store is down): the stream holds its place, sends
    /// heartbeats, and tries again with the next frame.
    holding: bool,
    /// When this stream ends, once draining.
    draining: Option<Instant>,
    /// Why the stream ended, for `/metrics`, when whoever ended it knows.
    ending: Option<Disconnect>,
    /// Set by a connection whose client stopped reading (the hyper path's stall cut-off).
    stalled: Option<Arc<AtomicBool>>,
    /// On the policy watcher's list: told when this reader may no longer read the room.
    watched: Watched,
    /// The `revoked` event was written: the stream is over.
    revoked: bool,
    /// Counted in the room's presence and in the stream caps for as long as it lives.
    _reader: Reader,
    _permit: Permit,
}

/// What the room's channel gave.
enum Received {
    Frame(Arc<Frame>),
    /// Too far behind the channel: catch up from history.
    Lagged,
    /// The stream is over (shutdown, or the end of a drain).
    End,
}

impl Feed {
    /// Subscribes and fixes the starting point.
    ///
    /// Both happen before the response starts, so a client that has the response headers
    /// misses nothing posted after; a store that cannot answer is an error response, not a
    /// stream that ends at once.
    pub async fn open(state: &AppState, request: FeedRequest) -> Result<Self, AppError> {
        let FeedRequest {
            room,
            resume_from,
            format,
            reader,
            reader_id,
            presence,
            client,
            identity,
            credential,
        } = request;
        if state.shutdown.is_cancelled() {
            return Err(AppError::Unavailable(
                "the server is shutting down; reconnect in a moment".to_owned(),
            ));
        }
        // Watched before the check: a change after the check ends the stream.
        let watched = state.policy.watch(&identity, client, credential);
        state.admit(&identity, client, &room, Need::Read).await?;
        let permit =
            state.streams.admit(Some(client)).inspect_err(|_| state.metrics.limited(Limited::Streams))?;
        // Subscribe before reading anything, so nothing published from here on is missed.
        let subscription = state.hub.subscribe(&room);
        // A fresh reader starts after the newest message; everything newer reaches it.
        let cursor = match resume_from {
            Some(id) => id,
            None => newest_id(state, &room).await?,
        };
        let reader = state.presence.join(&room, reader.as_ref(), reader_id.as_ref(), client);
        let here = match presence {
            true => Some(state.presence.view(&room).await?),
            false => None,
        };
        Ok(Self {
            shared: Shared {
                store: Arc::clone(&state.store),
                retry: state.config.retry,
                coalesce: state.config.coalesce,
                metrics: Arc::clone(&state.metrics),
            },
            opening: opening(format, state.config.retry, here.as_ref()),
            room,
            format,
            subscription,
            cursor,
            // A fresh reader has nothing to replay.
            sorting: Sorting {
                presence,
                told: here,
                catching_up: resume_from.is_some(),
                ..Sorting::default()
            },
            written: None,
            last_write: None,
            holding: false,
            draining: None,
            ending: None,
            stalled: None,
            watched,
            revoked: false,
            _reader: reader,
            _permit: permit,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Counts this stream as cut off for stalling if `flag` is set when it ends (a
    /// connection that serves it through hyper sets it).
    pub fn watch_stall(&mut self, flag: Arc<AtomicBool>) {
        self.stalled = Some(flag);
    }

    /// Records why the stream is ending, for `/metrics` (otherwise: the client left).
    pub fn end(&mut self, why: Disconnect) {
        self.ending.get_or_insert(why);
    }

    /// The next bytes to write, or `None` once the stream is over (shutdown or drain).
    /// Cancelled part way, it may lose what it was gathering: end the stream then.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.count_written();
        if self.revoked {
            return None;
        }
        if let Some(opening) = self.opening.take() {
            return Some(opening);
        }
        loop {
            if std::mem::take(&mut self.sorting.recheck)
                && let Some(reason) = self.watched.recheck(&self.room).await
            {
                return Some(self.revoke(reason));
            }
            if let Some(window) = self.sorting.drain_request.take()
                && let Some(retry) = self.begin_drain(window)
            {
                return Some(retry);
            }
            if self.sorting.catching_up && !self.holding {
                match self.catch_up().await {
                    Some(bytes) => return Some(bytes),
                    None => continue,
                }
            }
            let first = match self.receive().await {
                Received::Frame(frame) => frame,
                Received::Lagged => {
                    self.sorting.lagged();
                    continue;
                }
                Received::End => {
                    self.end(Disconnect::Shutdown);
                    return None;
                }
            };
            if std::mem::take(&mut self.holding) {
                // History is tried again next; a heartbeat still goes out meanwhile.
                let beat = first.encoded(self.format);
                if matches!(first.event(), Event::Heartbeat) && !beat.is_empty() {
                    return Some(beat);
                }
                continue;
            }
            if !matches!(self.sorting.take(&first), Take::Send) {
                continue;
            }
            self.wait_to_coalesce().await;
            if let Some(bytes) = self.gather(&first) {
                return Some(bytes);
            }
        }
    }

    /// The stream as a response body.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + use<> {
        futures_util::stream::unfold(self, |mut feed| async move {
            feed.next().await.map(|bytes| (Ok(bytes), feed))
        })
    }

    /// Ends the stream at a random moment within `window`, and asks the client to wait a
    /// random extra while before reconnecting: no stampede onto other nodes.
    fn begin_drain(&mut self, window: Duration) -> Option<Bytes> {
        let window_ms = window.as_millis() as u64;
        self.draining = Some(Instant::now() + Duration::from_millis(fastrand::u64(0..=window_ms)));
        let retry = self.shared.retry.as_millis() as u64 + fastrand::u64(0..=window_ms.max(1000));
        self.format.preamble(retry)
    }

    /// One page of history after the cursor, if it holds anything to send. While history
    /// cannot be read (the store is down), the stream holds its place: it delivers nothing
    /// live (that would skip the gap) and tries again with the next frame that arrives, so
    /// at the next heartbeat, or at once when the store says it is back (a resync frame).
    async fn catch_up(&mut self) -> Option<Bytes> {
        match self.history_after().await {
            Ok((bytes, more)) => {
                self.sorting.catching_up = more;
                (!bytes.is_empty()).then_some(bytes)
            }
            Err(e) => {
                tracing::warn!(room = %self.room, error = %e, "feed cannot read history; holding its place");
                self.holding = true;
                None
            }
        }
    }

    /// The `revoked` event; the stream ends after it. Through here both paths end a
    /// stream that lost access the same way.
    fn revoke(&mut self, reason: String) -> Bytes {
        self.end(Disconnect::Revoked);
        self.revoked = true;
        Frame::new(Event::Revoked { reason }).encoded(self.format)
    }

    /// The next frame from the room's channel: messages, heartbeats, resyncs and the end of
    /// the room (at shutdown) all come through it; besides it, only a revocation (and, while
    /// draining, the deadline) is waited for.
    async fn receive(&mut self) -> Received {
        let deadline = self.draining;
        let drained = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let received = tokio::select! {
            biased;
            received = self.subscription.receiver().recv() => received,
            _ = drained => return Received::End,
        };
        match received {
            Ok(frame) => Received::Frame(frame),
            Err(RecvError::Lagged(_)) => Received::Lagged,
            Err(RecvError::Closed) => Received::End,
        }
    }

    /// A stream written to moments ago waits out the rest of the coalescing interval, so
    /// that at high rates one write carries several messages. A quiet stream (the usual
    /// chat) is written to at once.
    async fn wait_to_coalesce(&self) {
        if let Some(wait) = self.last_write.and_then(|t| self.shared.coalesce.checked_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
        }
    }

    /// `first` and whatever else is already waiting, as one write.
    fn gather(&mut self, first: &Frame) -> Option<Bytes> {
        let mut batch = Batch::default();
        batch.push(first, &mut self.cursor, self.format);
        while batch.len() < MAX_BATCH_BYTES {
            match self.subscription.receiver().try_recv() {
                Ok(frame) => match self.sorting.take(&frame) {
                    Take::Send => batch.push(&frame, &mut self.cursor, self.format),
                    Take::Skip => {}
                    Take::Stop => break,
                },
                Err(TryRecvError::Lagged(_)) => {
                    self.sorting.lagged();
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let counts = (batch.messages, batch.published);
        let bytes = batch.finish()?;
        // Noted now: the write happens as soon as the caller has the bytes.
        self.last_write = Some(Instant::now());
        self.written = Some(counts);
        Some(bytes)
    }

    /// The previous write is done (the caller asks for more): count its deliveries.
    fn count_written(&mut self) {
        if let Some((messages, published)) = self.written.take() {
            self.shared.metrics.delivered(messages);
            if let Some(published) = published {
                self.shared.metrics.flushed(published.elapsed());
            }
        }
    }

    /// One page of history after `cursor`, encoded, and whether more may follow.
    ///
    /// A cursor the store cannot continue from exactly (pruned ids, or an id this store
    /// never gave, as after a restart of the memory store) yields a `reset` first, and the
    /// replay goes on from the oldest message held.
    async fn history_after(&mut self) -> Result<(Bytes, bool), StoreError> {
        let (store, metrics) = (&self.shared.store, &self.shared.metrics);
        let (room, cursor, format) = (&self.room, &mut self.cursor, self.format);
        let mut page = store.read(room, Range::After(*cursor), REPLAY_PAGE).await?;
        let mut batch = Batch::default();
        if *cursor > page.last_id {
            *cursor = 0;
            page = store.read(room, Range::After(0), REPLAY_PAGE).await?;
            batch.push_event(Event::Reset { oldest_id: page.first_held }, format);
            metrics.reset(ResetReason::UnknownId);
        } else if *cursor > 0 && *cursor + 1 < page.first_held {
            // (0 is a client that has nothing yet: whatever went before it, it had none of,
            // so there is no gap to tell it about, and ids that start high are no gap.)
            batch.push_event(Event::Reset { oldest_id: page.first_held }, format);
            metrics.reset(ResetReason::Pruned);
        }
        let more = page.entries.len() == REPLAY_PAGE;
        for entry in page.entries {
            batch.push(&Frame::new(Event::of(entry)), cursor, format);
        }
        // Replayed, not live: counted as deliveries, but not timed from publication.
        metrics.delivered(batch.messages);
        batch.published = None;
        Ok((batch.finish().unwrap_or_default(), more))
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let stalled = self.stalled.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed));
        let why = self.ending.unwrap_or(if stalled { Disconnect::Stall } else { Disconnect::Client });
        self.shared.metrics.disconnected(why);
    }
}

/// Frames gathered for one write; skips what the reader already has.
#[derive(Default)]
struct Batch {
    first: Option<Bytes>,
    rest: Option<BytesMut>,
    /// Messages in the batch.
    messages: u64,
    /// When the oldest live message in the batch was published.
    published: Option<std::time::Instant>,
}

impl Batch {
    fn push(&mut self, frame: &Frame, cursor: &mut MessageId, format: Format) {
        if let Some(id) = frame.id() {
            if id <= *cursor {
                return;
            }
            *cursor = id;
            self.messages += 1;
            self.published.get_or_insert(frame.published);
        }
        self.append(frame.encoded(format));
    }

    fn push_event(&mut self, event: Event, format: Format) {
        self.append(Frame::new(event).encoded(format));
    }

    fn append(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return; // a heartbeat in a format that has none
        }
        match (&mut self.first, &mut self.rest) {
            (None, _) => self.first = Some(bytes),
            (Some(first), None) => {
                let mut buf = BytesMut::with_capacity(first.len() + bytes.len());
                buf.extend_from_slice(first);
                buf.extend_from_slice(&bytes);
                self.rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&bytes),
        }
    }

    fn len(&self) -> usize {
        match (&self.first, &self.rest) {
            (_, Some(buf)) => buf.len(),
            (Some(first), None) => first.len(),
            (None, None) => 0,
        }
    }

    /// A single frame stays the shared `Bytes` it came as; only a batch is copied.
    fn finish(self) -> Option<Bytes> {
        match (self.first, self.rest) {
            (_, Some(buf)) => Some(buf.freeze()),
            (first, None) => first,
        }
    }
}

/// What a stream writes first: `retry:` (SSE) and the presence snapshot, if asked for.
/// The newest id of `room`, read after subscribing to it (shared with the streams that
/// subscribed at the same time: see [`crate::store::NewestIds`]).
async fn newest_id(state: &AppState, room: &RoomName) -> Result<MessageId, StoreError> {
    let read = || {
        let (store, room) = (Arc::clone(&state.store), room.clone());
        async move { Ok(store.read(&room, Range::Latest, 0).await?.last_id) }
    };
    state.newest.after_subscribing(room, read).await
}

fn opening(format: Format, retry: Duration, here: Option<&PresenceView>) -> Option<Bytes> {
    let mut batch = Batch::default();
    if let Some(preamble) = format.preamble(retry.as_millis() as u64) {
        batch.append(preamble);
    }
    if let Some(here) = here {
        batch.push_event(Event::Presence(here.clone()), format);
    }
    batch.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(anonymous: u64, version: u64) -> PresenceView {
        PresenceView { anonymous, version, ..PresenceView::default() }
    }

    fn sent(sorting: &mut Sorting, view: PresenceView) -> bool {
        matches!(sorting.take(&Frame::new(Event::Presence(view))), Take::Send)
    }

    #[test]
    fn a_stream_is_never_told_an_older_view_nor_the_same_people_twice() {
        let mut sorting = Sorting { presence: true, told: Some(view(2, 10)), ..Sorting::default() };
        assert!(!sent(&mut sorting, view(1, 9)), "computed before the last one told");
        assert!(!sent(&mut sorting, view(2, 11)), "the same people");
        assert!(sent(&mut sorting, view(3, 12)));
        assert!(!sent(&mut sorting, view(2, 11)), "older than the last one told");
        assert!(sent(&mut sorting, view(2, 13)), "newer, with other people");
    }
}
