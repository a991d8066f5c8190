#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| s2iam_sidecar::fuzzing::session_policy(data));
