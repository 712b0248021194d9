//! Request heads read by the connection loop and the fast path: parsing never panics, and a
//! head is never longer than what was read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssechat::connection::RequestHead;
use ssechat::fast_path::stream_request;

fuzz_target!(|data: &[u8]| {
    let _ = stream_request(data, data.len() % 2 == 0);
    if let Some(head) = RequestHead::parse(data) {
        assert!(head.len <= data.len());
    }
});
