//! Attackers on keep-alive connections: typing signals as fast as they come back, a new
//! author each time, in one room; and messages at a set rate, each to a new room. Each opens
//! a new connection, after a pause, whenever the server closes its last one.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::time::{Interval, MissedTickBehavior};

use super::Ctx;
use super::tally::Tally;
use crate::Target;

/// The most connections one attacker opens, however long the attack.
const MAX_CONNECTIONS: u32 = 100_000;
/// The most requests one attacker sends, however long the attack.
const MAX_REQUESTS: u64 = 100_000_000;

type Sender = SendRequest<Full<Bytes>>;

/// Typing signals in one room, each from a new author, as fast as the server answers.
pub async fn typing(ctx: Arc<Ctx>, tally: Arc<Tally>, source: Ipv4Addr) {
    let room = format!("{}-typing", ctx.prefix);
    let octet = source.octets()[3];
    let request = |n: u64| ctx.endpoint.typing(&room, &format!("flood-{octet}-{n}"));
    flood(&ctx, &tally, source, None, request).await;
}

/// Messages, each to a room of its own, `rate` per second (or as fast as answered).
pub async fn rooms(ctx: Arc<Ctx>, tally: Arc<Tally>, source: Ipv4Addr, rate: Option<f64>) {
    let octet = source.octets()[3];
    let pace = rate.map(|rate| {
        let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        every
    });
    let request = |n: u64| {
        let room = format!("{}-{octet}-{n}", ctx.prefix);
        ctx.endpoint.publish(Target::Ssechat, &room, "flood")
    };
    flood(&ctx, &tally, source, pace, request).await;
}

/// Sends `request(0)`, `request(1)`, ... (paced by `pace` if given) over a keep-alive
/// connection from `source`, and over a new one whenever the server closes it.
async fn flood(
    ctx: &Ctx,
    tally: &Tally,
    source: Ipv4Addr,
    mut pace: Option<Interval>,
    mut request: impl FnMut(u64) -> Request<Full<Bytes>>,
) {
    let mut sent = 0;
    for _ in 0..MAX_CONNECTIONS {
        if ctx.over() || sent >= MAX_REQUESTS {
            return;
        }
        if let Some(mut sender) = handshake(ctx, tally, source).await {
            let session = exchanges(&mut sender, tally, &mut sent, &mut pace, &mut request);
            let Some(first) = ctx.until_end(session).await else { return };
            tally.server_closed(first);
        }
        ctx.pause().await;
    }
}

async fn handshake(ctx: &Ctx, tally: &Tally, source: Ipv4Addr) -> Option<Sender> {
    let stream = ctx.connect(source, tally).await?;
    let Ok((sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        tally.failed();
        return None;
    };
    tokio::spawn(connection);
    Some(sender)
}

/// Requests on one connection until the server closes it; the status of its first answer.
async fn exchanges(
    sender: &mut Sender,
    tally: &Tally,
    sent: &mut u64,
    pace: &mut Option<Interval>,
    request: &mut impl FnMut(u64) -> Request<Full<Bytes>>,
) -> Option<u16> {
    let mut first = None;
    while *sent < MAX_REQUESTS {
        if let Some(pace) = pace {
            pace.tick().await;
        }
        if sender.ready().await.is_err() {
            break;
        }
        let Ok(response) = sender.send_request(request(*sent)).await else { break };
        *sent += 1;
        let status = response.status().as_u16();
        tally.answer(status);
        first.get_or_insert(status);
        // Read to the end, or the connection cannot carry the next request.
        if response.into_body().collect().await.is_err() {
            break;
        }
    }
    first
}
