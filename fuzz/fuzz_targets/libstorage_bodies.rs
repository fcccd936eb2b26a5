//! Fuzz target `libstorage_bodies`: the properties are in `polly::fuzzing::libstorage_bodies`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| polly::fuzzing::libstorage_bodies(data));
