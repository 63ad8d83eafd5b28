//! Any byte string must parse or fail with an error: never panic, hang or over-allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = gguf::Gguf::from_bytes(data.to_vec(), "fuzz") {
        let md = file.metadata();
        for (key, _) in md.iter() {
            let _ = md.u32(key);
            let _ = md.f32(key);
            let _ = md.str_array(key);
            let _ = md.i32_array(key);
        }
        for t in file.tensors() {
            let view = file.view(t);
            assert_eq!(view.data.len() as u64, t.size);
            let _ = (view.n_rows(), view.row_bytes(), t.n_elements());
        }
    }
});
