//! Request heads as the connection loop reads them, arriving in pieces: parsing never
//! panics, a head is never longer than what was read, and once a head is complete, more
//! bytes arriving after it never change it (the loop acts on the first complete parse).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssechat::connection::RequestHead;
use ssechat::fast_path::stream_request;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let _ = stream_request(data, split % 2 == 0);
    let whole = RequestHead::parse(data);
    if let Some(head) = &whole {
        assert!(head.len <= data.len());
    }
    // The same bytes, as the first read delivers them.
    let first_read = &data[..(split as usize).min(data.len())];
    if let Some(early) = RequestHead::parse(first_read)
        && early.one_at_a_time
    {
        assert_eq!(Some(early), whole, "a complete head changed as more bytes came");
    }
});
