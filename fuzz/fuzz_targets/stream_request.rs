//! Request heads read by the fast path: parsing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssechat::fast_path::stream_request;

fuzz_target!(|data: &[u8]| {
    let _ = stream_request(data);
});
