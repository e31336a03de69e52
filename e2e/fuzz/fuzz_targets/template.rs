//! libFuzzer entry point for the `template` target (see src/lib.rs).
#![no_main]
#![allow(unsafe_code)] // fuzz_target! exports the C entry point libFuzzer calls

libfuzzer_sys::fuzz_target!(|data: &[u8]| keeper_fuzz::template(data));
