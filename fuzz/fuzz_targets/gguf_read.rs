//! Any bytes given to the GGUF reader must give `Ok` or `Err`: no panic, no abort, no
//! allocation larger than the input (libFuzzer's `-malloc_limit_mb` catches those). A
//! file that is accepted (with an alignment of at most 64 KiB) must also survive being
//! used and rewritten: every tensor's bytes are where its info says, and writer → reader
//! → writer is byte-identical.

#![no_main]

use hearth_gguf::{GgufFile, GgufWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    // The rewrite pads to the file's `general.alignment`, which may be up to 2^31: a
    // 91-byte input with 2^30 allocated a gigabyte here (an out-of-memory report about
    // this harness, not the reader), and ones at 2^27 slowed the whole run a
    // thousandfold. The reader has taken the file by now; rewrite only files whose
    // padding is modest (real ones use 32 to 4096).
    if file.alignment() > 1 << 16 {
        return;
    }
    let mut w = GgufWriter::new();
    w.set_version(file.version());
    for (key, value) in file.metadata().iter() {
        let _ = value.type_description();
        w.set(key, value.clone());
    }
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes());
        assert_eq!(t.file_offset(), file.data_offset() + t.offset());
        assert_eq!(t.offset() % file.alignment(), 0);
        w.add_tensor(t.name(), t.ty(), t.shape(), bytes)
            .expect("a tensor the reader accepted is one the writer accepts");
    }
    let once = w.to_bytes();
    let reread = GgufFile::from_bytes(once.clone()).expect("the writer's output is valid");
    assert_eq!(reread.tensors().len(), file.tensors().len());
    let mut w2 = GgufWriter::new();
    w2.set_version(reread.version());
    for (key, value) in reread.metadata().iter() {
        w2.set(key, value.clone());
    }
    for t in reread.tensors() {
        w2.add_tensor(t.name(), t.ty(), t.shape(), reread.tensor_data(t))
            .unwrap();
    }
    assert!(
        w2.to_bytes() == once,
        "writer → reader → writer changed the bytes"
    );
});
