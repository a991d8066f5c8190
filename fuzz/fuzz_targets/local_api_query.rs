#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| s2iam::fuzzing::local_api_query(data));
