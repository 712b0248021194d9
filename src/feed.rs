//! One reader's feed: subscribe, replay what it missed, then stream live.
//!
//! The order is what makes resume lossless: subscribing first means nothing published
//! while history is read can be missed, and skipping every id at or below the cursor means
//! nothing is sent twice. A reader that falls behind the room's channel catches up from the
//! store the same way; if the store no longer holds what it missed it is told with a
//! `reset` event first. Heartbeats arrive through the room's channel, and the channel closes
//! when the server shuts down, which ends every feed: a stream waits on one thing only.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

use crate::domain::PresenceView;
use crate::domain::{Author, MessageId, RoomName};
use crate::error::AppError;
use crate::hub::Hub;
use crate::metrics::{Limited, Metrics, Reset as ResetReason};
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
    /// Whether to send presence and typing events too (`?presence=1`).
    pub presence: bool,
    /// Who is asking, for the per-client stream cap.
    pub client: std::net::IpAddr,
}

/// Everything a feed needs from the app, taken once when the stream starts.
struct Feed {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    retry: Duration,
    /// The least time between two writes to one stream (`--coalesce`).
    coalesce: Duration,
    metrics: Arc<Metrics>,
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
    /// Whether to send presence and typing at all.
    presence: bool,
    /// The presence this stream was last told: the same view is never sent twice.
    told: Option<PresenceView>,
    /// History must be read before anything live is sent.
    catching_up: bool,
    /// A drain (shutdown) asked for, to be started at the top of the loop.
    drain_request: Option<Duration>,
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
            Event::Drain(window) => {
                self.drain_request = Some(*window);
                Take::Stop
            }
            Event::Presence(_) | Event::Typing { .. } if !self.presence => Take::Skip,
            Event::Presence(view) if self.told.as_ref() == Some(view) => Take::Skip,
            Event::Presence(view) => {
                self.told = Some(view.clone());
                Take::Send
            }
            _ => Take::Send,
        }
    }
}

/// Subscribes and fixes the starting point, then returns the body of an `/events` response.
///
/// Both happen before the response starts, so a client that has the response headers
/// misses nothing posted after; a store that cannot answer is an error response, not a
/// stream that ends at once.
pub async fn open(
    state: &AppState,
    request: FeedRequest,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + use<>, AppError> {
    let feed = Feed {
        store: Arc::clone(&state.store),
        hub: Arc::clone(&state.hub),
        retry: state.config.retry,
        coalesce: state.config.coalesce,
        metrics: Arc::clone(&state.metrics),
    };
    let FeedRequest { room, resume_from, format, reader, presence, client } = request;
    if state.shutdown.is_cancelled() {
        return Err(AppError::Unavailable("the server is shutting down; reconnect in a moment".to_owned()));
    }
    let permit = state.streams.admit(client).inspect_err(|_| state.metrics.limited(Limited::Streams))?;
    // Subscribe before reading anything, so nothing published from here on is missed.
    let mut subscription = feed.hub.subscribe(&room);
    // A fresh reader starts after the newest message; everything newer reaches it.
    let mut cursor = match resume_from {
        Some(id) => id,
        None => feed.store.read(&room, Range::Latest, 0).await?.last_id,
    };
    // Counted in the room's presence for as long as the stream lives.
    let _reader = state.presence.join(&room, reader.as_ref());
    let here =
        if presence { Some(feed.store.presence(&room, state.presence.local(&room)).await?) } else { None };

    Ok(async_stream::stream! {
        let (_reader, _permit) = (_reader, permit);
        if let Some(preamble) = format.preamble(feed.retry.as_millis() as u64) {
            yield Ok(preamble);
        }
        // A fresh reader has nothing to replay.
        let mut sorting = Sorting { presence, told: here.clone(), catching_up: resume_from.is_some(), ..Sorting::default() };
        if let Some(here) = here {
            yield Ok(Frame::new(Event::Presence(here)).encoded(format));
        }
        let mut last_write: Option<Instant> = None;
        let mut stalled = false;
        // When this stream ends, once draining.
        let mut draining: Option<Instant> = None;

        loop {
            if let Some(window) = sorting.drain_request.take() {
                // End at a random moment within the window, and ask the client to wait a
                // random extra while before reconnecting: no stampede onto other nodes.
                let window_ms = window.as_millis() as u64;
                draining = Some(Instant::now() + Duration::from_millis(fastrand::u64(0..=window_ms)));
                let retry = feed.retry.as_millis() as u64 + fastrand::u64(0..=window_ms.max(1000));
                if let Some(retry) = format.preamble(retry) {
                    yield Ok(retry);
                }
            }
            // While history cannot be read (the store is down), the stream stays open and
            // keeps its place: it sends heartbeats, delivers nothing (anything live would
            // skip the gap), and tries again with each frame that arrives, so at the next
            // heartbeat, or at once when the store says it is back (a resync frame).
            if sorting.catching_up && !stalled {
                match feed.history_after(&room, &mut cursor, format).await {
                    Ok((bytes, more)) => {
                        sorting.catching_up = more;
                        if !bytes.is_empty() {
                            yield Ok(bytes);
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(%room, error = %e, "feed cannot read history; holding its place");
                        stalled = true;
                    }
                }
            }

            // One thing to wait on: messages, heartbeats, resyncs and the end of the room
            // (at shutdown) all come through the room's channel.
            let received = match draining {
                None => subscription.receiver().recv().await,
                Some(deadline) => tokio::select! {
                    received = subscription.receiver().recv() => received,
                    _ = tokio::time::sleep_until(deadline) => return,
                },
            };
            let first = match received {
                Ok(frame) => frame,
                Err(RecvError::Lagged(_)) => {
                    sorting.catching_up = true;
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if stalled {
                stalled = false; // try history again
                let beat = first.encoded(format);
                if matches!(first.event(), Event::Heartbeat) && !beat.is_empty() {
                    yield Ok(beat);
                }
                continue;
            }
            if !matches!(sorting.take(&first), Take::Send) {
                continue;
            }
            // Coalescing: a stream written to moments ago waits out the rest of the interval,
            // so that at high rates one write carries several messages. A quiet stream
            // (the usual chat) is written to at once.
            if let Some(wait) = last_write.and_then(|t| feed.coalesce.checked_sub(t.elapsed())) {
                tokio::time::sleep(wait).await;
            }
            // Gather whatever else is already waiting into one write.
            let mut batch = Batch::default();
            batch.push(&first, &mut cursor, format);
            while batch.len() < MAX_BATCH_BYTES {
                match subscription.receiver().try_recv() {
                    Ok(frame) => match sorting.take(&frame) {
                        Take::Send => batch.push(&frame, &mut cursor, format),
                        Take::Skip => {}
                        Take::Stop => break,
                    },
                    Err(TryRecvError::Lagged(_)) => {
                        sorting.catching_up = true;
                        break;
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            let (messages, published) = (batch.messages, batch.published);
            if let Some(bytes) = batch.finish() {
                // Noted before the yield: code after it runs only at the next poll.
                last_write = Some(Instant::now());
                yield Ok(bytes);
                // The next poll comes once the write is done: count it as flushed.
                feed.metrics.delivered(messages);
                if let Some(published) = published {
                    feed.metrics.flushed(published.elapsed());
                }
            }
        }
    })
}

impl Feed {
    /// One page of history after `cursor`, encoded, and whether more may follow.
    ///
    /// A cursor the store cannot continue from exactly (pruned ids, or an id this store
    /// never gave, as after a restart of the memory store) yields a `reset` first, and the
    /// replay goes on from the oldest message held.
    async fn history_after(
        &self,
        room: &RoomName,
        cursor: &mut MessageId,
        format: Format,
    ) -> Result<(Bytes, bool), StoreError> {
        let mut page = self.store.read(room, Range::After(*cursor), REPLAY_PAGE).await?;
        let mut batch = Batch::default();
        if *cursor > page.last_id {
            *cursor = 0;
            page = self.store.read(room, Range::After(0), REPLAY_PAGE).await?;
            batch.push_event(Event::Reset { oldest_id: page.first_held }, format);
            self.metrics.reset(ResetReason::UnknownId);
        } else if *cursor + 1 < page.first_held {
            batch.push_event(Event::Reset { oldest_id: page.first_held }, format);
            self.metrics.reset(ResetReason::Pruned);
        }
        let more = page.messages.len() == REPLAY_PAGE;
        for message in page.messages {
            batch.push(&Frame::new(Event::Message(message)), cursor, format);
        }
        // Replayed, not live: counted as deliveries, but not timed from publication.
        self.metrics.delivered(batch.messages);
        batch.published = None;
        Ok((batch.finish().unwrap_or_default(), more))
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
