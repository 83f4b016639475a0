#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzz::vp8_ingest(data));
