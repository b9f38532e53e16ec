//! Arbitrary bytes as a request body: `/v1/chat/completions` and `/v1/completions`
//! parsing (JSON, every field's type and range, `response_format`, `tools`, messages
//! with tool calls) must accept or refuse with a 400 naming what is wrong, never panic.
//! Accepted requests must respect the documented bounds.

#![no_main]

use hearth_server::request::{parse_chat, parse_completion, MAX_LOGIT_BIAS, MAX_STOP};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for parsed in [parse_chat(data), parse_completion(data)] {
        match parsed {
            Ok(r) => {
                let r = r.request;
                assert!(r.n >= 1);
                assert!(r.stop.len() <= MAX_STOP);
                assert!(r.sampler.logit_bias.len() <= MAX_LOGIT_BIAS);
                assert!(r.sampler.temperature.is_finite() && r.sampler.temperature >= 0.0);
            }
            Err(e) => assert!(e.status.is_client_error(), "{e:?}"),
        }
    }
});
