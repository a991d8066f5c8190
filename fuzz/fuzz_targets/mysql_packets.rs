#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| s2iam_sidecar::fuzzing::mysql_packets(data));
