//! Micro-benchmarks of the fan-out hot path: encoding a frame, and one publish to N
//! subscribers (send plus every subscriber receiving it).
//!
//!     cargo bench --bench hot_path

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ssechat::domain::{Message, NewMessage, RoomName, Timestamp};
use ssechat::hub::Hub;
use ssechat::wire::{Event, Format, Frame, encode_sse_frame};

fn message(text: &str) -> Message {
    let new = NewMessage::parse("general", Some("ana"), Some(text)).unwrap();
    Message::new(42, new, Timestamp::now())
}

fn encoding(c: &mut Criterion) {
    let short = Event::Message(message("hello, how is everyone doing today?"));
    let long = Event::Message(message(&"a line of chat <with markup> & more\n".repeat(100)));
    c.bench_function("encode_sse_frame/short", |b| b.iter(|| encode_sse_frame(black_box(&short))));
    c.bench_function("encode_sse_frame/3.6KB", |b| b.iter(|| encode_sse_frame(black_box(&long))));
    c.bench_function("frame_all_formats/short", |b| {
        b.iter(|| {
            let frame = Frame::new(black_box(short.clone()));
            (frame.encoded(Format::Sse), frame.encoded(Format::Ndjson), frame.encoded(Format::Plain))
        })
    });
}

fn publish(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("hub_publish_and_receive");
    for subscribers in [1usize, 100, 1_000, 10_000] {
        let _guard = runtime.enter();
        let hub = Hub::new(1024);
        let room = RoomName::general();
        let mut subs: Vec<_> = (0..subscribers).map(|_| hub.subscribe(&room)).collect();
        let msg = ssechat::domain::Entry::Message(message("hello, how is everyone doing today?"));
        group.throughput(criterion::Throughput::Elements(subscribers as u64));
        group.bench_with_input(BenchmarkId::from_parameter(subscribers), &subscribers, |b, _| {
            b.iter(|| {
                hub.publish(black_box(&msg));
                for sub in subs.iter_mut() {
                    black_box(sub.receiver().try_recv().unwrap());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encoding, publish);
criterion_main!(benches);
