#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| s2iam::fuzzing::mysql_packets(data));
