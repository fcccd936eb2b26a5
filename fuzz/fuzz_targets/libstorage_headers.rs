//! Fuzz target `libstorage_headers`: the properties are in `polly::fuzzing::libstorage_headers`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| polly::fuzzing::libstorage_headers(data));
