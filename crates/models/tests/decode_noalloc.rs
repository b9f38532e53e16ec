//! Once a cache, a scratch and a batch have served one step of a given shape, decoding
//! allocates nothing, on any thread: not the layers, not attention, not the cache's
//! block tables (a new block is taken from the free list). A counting global allocator
//! sees every allocation of this test binary, which holds this one test only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hearth_gguf::GgufFile;
use hearth_kernels::pool::ThreadPool;
use hearth_models::{tiny, Batch, KvCache, KvType, KvTypes, Model, Scratch};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decoding_does_not_allocate_after_warm_up() {
    let pool = ThreadPool::new(2).unwrap();
    // Each model with another stored KV type (all of which the cache writes in place).
    for (name, kv_type) in [
        ("llama_q4_k", KvType::F32),
        ("qwen2_q8_0", KvType::F16),
        ("qwen3_mixed", KvType::Q8_0),
        ("gemma3_q", KvType::F16),
    ] {
        let spec = tiny::specs().into_iter().find(|s| s.name == name).unwrap();
        let file = GgufFile::from_bytes(spec.to_bytes()).unwrap();
        let model = Model::load(&file).unwrap();
        let types = KvTypes::both(kv_type);
        let mut kv = KvCache::with_types(model.hparams(), 128, types).unwrap();
        let mut scratch = Scratch::new(&model, 16, 2).unwrap();
        let (a, b) = (kv.new_sequence(), kv.new_sequence());
        let mut batch = Batch::with_capacity(16);

        // Warm-up: a prompt, then one step of each shape decoded below.
        batch.push_seq(&tiny::test_tokens(20)[..10], 0, a, false);
        model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap();
        batch.clear();
        batch.push(7, 10, a, true);
        model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap();
        batch.clear();
        batch.push(8, 11, a, true);
        batch.push(9, 0, b, true);
        model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap();

        let before = ALLOCS.load(Ordering::SeqCst);
        let mut token = 3;
        for step in 0..40u32 {
            batch.clear();
            batch.push(token, 12 + step, a, true);
            if step % 2 == 0 {
                batch.push(token, 1 + step / 2, b, true);
            }
            let logits = model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap();
            // Greedy: the next token depends on the logits, as in real decoding.
            token = (0..logits.len() / 2).fold(
                0,
                |best, i| {
                    if logits[i] > logits[best] {
                        i
                    } else {
                        best
                    }
                },
            ) as u32;
        }
        assert_eq!(
            ALLOCS.load(Ordering::SeqCst) - before,
            0,
            "{name}: decoding allocated"
        );
    }
}
