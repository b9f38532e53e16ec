//! The forward pass's paths agree with each other, and the KV cache's bookkeeping holds:
//! a prompt in one batch, in slices, or token by token gives the same logits; sequences
//! in one batch do not see each other; truncated, removed and recycled cells behave.
//! Refused batches are typed errors that leave the cache as it was.

mod common;

use common::*;
use hearth_kernels::dispatch::Kernels;
use hearth_kernels::gemm;
use hearth_kernels::pool::ThreadPool;
use hearth_models::{tiny, Batch, KvCache, Model, ModelError, Scratch, BLOCK_CELLS};

/// Slicing a batch and decoding token by token only change which tokens share a matrix
/// product, not the arithmetic of any one row: agreement to rounding noise.
const PATH_TOLERANCE: f64 = 1e-6;

/// Where the kernel table has a GEMM micro-kernel, products of 4 or more tokens of a
/// quantized weight go through it: the same integer products, summed in another f32
/// order than the row path's dot. On these random tiny models such a reordering moves
/// the logits by up to ~9e-3 of their largest (qwen2_q8_0: 8.8e-3, exactly as far as
/// the AVX2 row path is from the scalar one there; the GEMM result is the one within
/// 1.2e-7 of the scalar level).
const GEMM_PATH_TOLERANCE: f64 = 2e-2;

#[test]
fn batch_slices_and_decoding_agree() {
    let pool = ThreadPool::new(2).unwrap();
    let tokens = tiny::test_tokens(20);
    for spec in tiny::specs() {
        let file = tiny_file(spec.name);
        let model = Model::load(&file).unwrap();
        let via_gemm = Kernels::get().gemm().is_some()
            && file.tensors().iter().any(|t| gemm::supports(t.ty()));
        let tolerance = if via_gemm {
            GEMM_PATH_TOLERANCE
        } else {
            PATH_TOLERANCE
        };
        let whole = logits_batch(&model, &pool, &tokens, 64);
        for n_ubatch in [1, 3, 7] {
            let sliced = logits_batch(&model, &pool, &tokens, n_ubatch);
            let err = rel_max_err(&sliced, &whole);
            assert!(
                err <= tolerance,
                "{}: n_ubatch {n_ubatch}: {err:e}",
                spec.name
            );
        }
        let decoded = logits_decode(&model, &pool, &tokens);
        let err = rel_max_err(&decoded, &whole);
        assert!(err <= tolerance, "{}: decode: {err:e}", spec.name);
    }
}

/// Logits of every token of `tokens` (one sequence from position 0), every product on
/// the row path, as the scheduler runs short prompts and every step with decode tokens.
fn logits_rows(model: &Model<'_>, pool: &ThreadPool, tokens: &[u32]) -> Vec<f32> {
    let mut kv = KvCache::new(model.hparams(), 64).unwrap();
    let mut scratch = Scratch::new(model, 64, tokens.len()).unwrap();
    let seq = kv.new_sequence();
    let mut batch = Batch::new();
    batch.push_seq(tokens, 0, seq, true);
    batch.set_gemm_from(batch.len());
    model
        .forward(pool, &mut kv, &mut scratch, &batch)
        .unwrap()
        .to_vec()
}

/// A request's text must not depend on who shares its steps, so under the scheduler's
/// rule (`Batch::set_gemm_from`: the row path in company) a sequence's logits in a
/// batch equal its logits alone bit for bit, wherever its cells and its tokens lie.
/// Without that rule a product's path follows the token count of each micro-batch (the
/// GEMM from `gemm::MIN_TOKENS` on), and the two paths round apart: by up to 7e-4 of
/// the largest logit on `gemma3_q` at the AVX2 level.
#[test]
fn sequences_in_one_batch_are_independent() {
    let pool = ThreadPool::new(2).unwrap();
    let a = tiny::test_tokens(20);
    let b: Vec<u32> = a
        .iter()
        .rev()
        .map(|&t| (t * 7) % tiny::N_VOCAB as u32)
        .collect();
    for (spec, pack) in tiny::specs().iter().flat_map(|s| [(s, false), (s, true)]) {
        let file = tiny_file(spec.name);
        let mut model = Model::load(&file).unwrap();
        // With packed weights too (`Model::pack_for_batches`), where the spec's pack.
        if pack && model.pack_for_batches().unwrap() == 0 {
            continue;
        }
        let name = format!("{}{}", spec.name, if pack { " (packed)" } else { "" });
        let n_vocab = model.hparams().n_vocab;
        let alone_a = logits_rows(&model, &pool, &a);
        let alone_b = logits_rows(&model, &pool, &b);
        // One token per step, as a sequence decodes alone: the same logits.
        let steps = logits_decode(&model, &pool, &a);
        let err = rel_max_err(&steps, &alone_a);
        assert!(
            steps == alone_a,
            "{name}: one token per step moved by {err:e}"
        );

        let mut kv = KvCache::new(model.hparams(), 128).unwrap();
        // Micro-batches of 16: the 40 tokens below are cut at other places than alone.
        let mut scratch = Scratch::new(&model, 16, 64).unwrap();
        // A sequence created and dropped first, so the others' cells are not the first.
        let gone = kv.new_sequence();
        let (sa, sb) = (kv.new_sequence(), kv.new_sequence());
        let mut batch = Batch::new();
        batch.push_seq(&a[..5], 0, gone, false);
        model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap();
        assert!(kv.remove_sequence(gone));

        // Interleaved, with `b` starting later and in a different slice pattern.
        batch.clear();
        for i in 0..a.len() {
            batch.push(a[i], i as u32, sa, true);
            if i >= 3 {
                batch.push(b[i - 3], (i - 3) as u32, sb, true);
            }
        }
        for (i, &t) in b.iter().enumerate().skip(a.len() - 3) {
            batch.push(t, i as u32, sb, true);
        }
        batch.set_gemm_from(batch.len());
        let out = model
            .forward(&pool, &mut kv, &mut scratch, &batch)
            .unwrap()
            .to_vec();
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        for (row, &seq) in out.chunks_exact(n_vocab).zip(batch.seq_ids()) {
            if seq == sa { &mut got_a } else { &mut got_b }.extend_from_slice(row);
        }
        for (seq, got, alone) in [("a", &got_a, &alone_a), ("b", &got_b, &alone_b)] {
            let err = rel_max_err(got, alone);
            assert!(got == alone, "{name}: sequence {seq} moved by {err:e}");
        }
        assert_eq!(kv.seq_len(sa), Some(a.len()));
        assert_eq!(kv.seq_next_pos(sb), Some(b.len() as u32));
    }
}

/// Packed weights (`Model::pack_for_batches`) give the logits of the weights as the file
/// stores them, within float rounding: the packed kernels sum each block's integers
/// exactly before scaling it, the row kernels in eight partial lanes. Checked on every
/// tiny model with weights that pack at this CPU level (a Q8_0 head or Q5_0 layers, on
/// x86); a layout mistake moves logits by whole weights, far past the bound.
#[test]
fn packed_weights_give_the_same_logits() {
    let pool = ThreadPool::new(2).unwrap();
    let tokens = tiny::test_tokens(12);
    let mut packed = 0;
    for spec in tiny::specs() {
        let file = tiny_file(spec.name);
        let plain = Model::load(&file).unwrap();
        let mut model = Model::load(&file).unwrap();
        if model.pack_for_batches().unwrap() == 0 {
            continue;
        }
        packed += 1;
        let (want, got) = (
            logits_rows(&plain, &pool, &tokens),
            logits_rows(&model, &pool, &tokens),
        );
        let err = rel_max_err(&got, &want);
        // Packed products round differently in the last bits, and where such a bit
        // decides the rounding of an activation to Q8_0 before the next layer, the
        // difference grows to a quant step: gemma3_q's Q5_0 layers moved its logits by
        // 1.2e-3 packed, exactly as much as the VNNI GEMM's path does. Where its Q4_K
        // `attn_output` packs too (AVX-512 VNNI), 2.4e-3: packed K-quants read Q8_0
        // activations (a scale per 32) where the stored rows' kernels read Q8_K (one per
        // 256). llama_q4_k, all K-quants, moves 1.25e-2 when they pack: the size of its
        // Q8_K rounding itself (2.5e-2 from numpy's exact math either way, see
        // `tiny_fixtures`, which checks packed models against numpy too). A packing
        // mistake moves them by whole weights.
        assert!(err < 3e-2, "{}: packing moved logits by {err:e}", spec.name);
    }
    let expect_packing = hearth_kernels::dispatch::Kernels::get()
        .packed(hearth_kernels::matmul::packed::PackedFormat::Q8_0)
        .is_some();
    assert!(
        !expect_packing || packed > 0,
        "no tiny model has weights that pack"
    );
}

/// Where memory can be spared (`Model::pack_for_batches_within`), the layers' K-quant
/// matrices pack even when their copy is more than the share rule allows: all of
/// llama_q4_k's layers are Q4_K and Q6_K. Exactly the copy's size is enough, a byte less
/// is not, and the packed model's logits stay within the packed bound.
#[test]
fn spare_memory_packs_what_the_share_rule_leaves() {
    if hearth_kernels::dispatch::Kernels::get()
        .packed(hearth_kernels::matmul::packed::PackedFormat::Q4_K)
        .is_none()
    {
        return;
    }
    let pool = ThreadPool::new(2).unwrap();
    let tokens = tiny::test_tokens(12);
    let file = tiny_file("llama_q4_k");
    let plain = Model::load(&file).unwrap();
    let packed = |spare: u64| {
        let mut m = Model::load(&file).unwrap();
        let bytes = m.pack_for_batches_within(spare).unwrap();
        (m, bytes as u64)
    };
    let (_, by_rule) = packed(0);
    let (all, all_bytes) = packed(u64::MAX);
    assert!(
        all_bytes > by_rule,
        "{all_bytes} bytes packed with room, {by_rule} without"
    );
    let layers = all_bytes - by_rule;
    assert_eq!(packed(layers).1, all_bytes, "room for exactly the copy");
    assert_eq!(packed(layers - 1).1, by_rule, "a byte short");
    let err = rel_max_err(
        &logits_rows(&all, &pool, &tokens),
        &logits_rows(&plain, &pool, &tokens),
    );
    assert!(err < 3e-2, "packing every layer moved logits by {err:e}");
}

/// Where the packed kernels take every token (AVX-512 VNNI), a model whose every matrix
/// packs lets the file's bytes of them go (`Model::release_packed`): from a mapped file,
/// the logits stay the same bits (a tied head's embedding lookups now read its packed
/// copy, whose rows dequantize to the file's). Elsewhere nothing is released.
#[test]
fn released_weights_leave_the_logits_alone() {
    let pool = ThreadPool::new(2).unwrap();
    let tokens = tiny::test_tokens(12);
    let dir = tempfile::tempdir().unwrap();
    let in_place = Kernels::get().packed_prompts();
    let mut released_any = false;
    for spec in tiny::specs() {
        let path = dir.path().join(format!("{}.gguf", spec.name));
        std::fs::write(&path, spec.to_bytes()).unwrap();
        let file = hearth_gguf::GgufFile::open_with(&path, hearth_gguf::Residency::Mapped).unwrap();
        let mut model = Model::load(&file).unwrap();
        model.pack_for_batches_within(u64::MAX).unwrap();
        let before = logits_rows(&model, &pool, &tokens);
        let fully = model.fully_packed();
        let released = model.release_packed(&file);
        assert!(
            in_place || released == 0,
            "{}: released {released} bytes where prompts take the GEMM",
            spec.name
        );
        released_any |= fully && released > 0;
        let after = logits_rows(&model, &pool, &tokens);
        assert!(
            before
                .iter()
                .zip(&after)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}: logits changed after releasing {released} bytes",
            spec.name
        );
    }
    assert!(!in_place || released_any, "no tiny model packs fully");
}

/// A packed output head hands over its logits' block keys (`Model::forward_keyed`), and
/// they are the keys of the logits it returns, row by row, in slices of a batch too; a
/// head as the file stores it, or a model that changes its logits after the head (Gemma
/// 3's final soft cap), gives none, and the sampler takes them from the logits.
#[test]
fn packed_heads_give_their_logits_keys() {
    let pool = ThreadPool::new(2).unwrap();
    let tokens = tiny::test_tokens(12);
    let ops = hearth_kernels::ops::Ops::get();
    let (mut keyed, mut checked_cap) = (0, false);
    // The soft-capped model with a head that packs (its fixtures' one is F32).
    let mut capped = spec("gemma3_softcap");
    capped.name = "gemma3_softcap, Q8_0 head";
    capped.types.output = hearth_kernels::quant::TensorType::Q8_0;
    for spec in tiny::specs().into_iter().chain([capped]) {
        let file = hearth_gguf::GgufFile::from_bytes(spec.to_bytes()).unwrap();
        let mut model = Model::load(&file).unwrap();
        for packed in [false, true] {
            if packed {
                model.pack_for_batches().unwrap();
            }
            let n_vocab = model.hparams().n_vocab;
            let mut kv = KvCache::new(model.hparams(), 64).unwrap();
            // Slices of 5 tokens: each writes its rows at its own offset.
            let mut scratch = Scratch::new(&model, 5, tokens.len()).unwrap();
            let seq = kv.new_sequence();
            let mut batch = Batch::new();
            batch.push_seq(&tokens, 0, seq, true);
            batch.set_gemm_from(batch.len());
            let logits = model
                .forward_keyed(&pool, &mut kv, &mut scratch, &batch)
                .unwrap();
            let capped = spec.final_logit_softcapping.is_some();
            let Some(keys) = logits.keys else {
                checked_cap |= packed && capped;
                continue;
            };
            assert!(packed, "{}: keys from a head as stored", spec.name);
            assert!(!capped, "{}: keys of the logits before the cap", spec.name);
            keyed += 1;
            let n_keys = n_vocab.div_ceil(64);
            assert_eq!(keys.len(), tokens.len() * n_keys, "{}", spec.name);
            let mut want = vec![0; n_keys];
            for (t, (row, got)) in logits
                .values
                .chunks_exact(n_vocab)
                .zip(keys.chunks_exact(n_keys))
                .enumerate()
            {
                ops.block_max_keys(row, &mut want);
                assert_eq!(got, &want[..], "{}: row {t}'s keys", spec.name);
            }
        }
    }
    let expect_keys = hearth_kernels::dispatch::Kernels::get()
        .packed(hearth_kernels::matmul::packed::PackedFormat::Q8_0)
        .is_some();
    assert!(!expect_keys || keyed > 0, "no tiny model's head gave keys");
    assert!(
        !expect_keys || checked_cap,
        "the capped model's head did not pack"
    );
}

/// Past one attention window (256 keys) the keys are cut into windows whose states are
/// merged; a prompt in one batch (a unit per query tile, its windows in turn), in slices,
/// or token by token (few query tiles: a unit per window, merged after the dispatch)
/// makes the same merges, so on the row path every logit is equal bit for bit.
#[test]
fn long_rows_merge_windows_alike_in_every_batch() {
    let pool = ThreadPool::new(2).unwrap();
    let tokens = tiny::test_tokens(600);
    for name in [
        "gemma3_softcap",
        "qwen2_f16",
        "qwen2_q8_0",
        "ds3_q",
        "ds2lite_f32",
        "llama_q4_k",
    ] {
        let file = tiny_file(name);
        let model = Model::load(&file).unwrap();
        let run = |n_ubatch: usize| {
            let mut kv = KvCache::new(model.hparams(), tokens.len()).unwrap();
            let mut scratch = Scratch::new(&model, n_ubatch, tokens.len()).unwrap();
            let seq = kv.new_sequence();
            let mut batch = Batch::new();
            let mut out = Vec::new();
            for (i, chunk) in tokens.chunks(n_ubatch).enumerate() {
                batch.clear();
                batch.push_seq(chunk, (i * n_ubatch) as u32, seq, true);
                batch.set_gemm_from(batch.len());
                out.extend_from_slice(model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap());
            }
            out
        };
        let whole = run(tokens.len());
        for n_ubatch in [1, 37] {
            let got = run(n_ubatch);
            let err = rel_max_err(&got, &whole);
            assert!(got == whole, "{name}: n_ubatch {n_ubatch} moved by {err:e}");
        }
    }
}

#[test]
fn truncated_sequences_continue_as_if_fresh() {
    let pool = ThreadPool::new(2).unwrap();
    let tokens = tiny::test_tokens(20);
    let file = tiny_file("gemma3_f32");
    let model = Model::load(&file).unwrap();
    let n_vocab = model.hparams().n_vocab;
    let whole = logits_batch(&model, &pool, &tokens, 64);

    let mut kv = KvCache::new(model.hparams(), 64).unwrap();
    let mut scratch = Scratch::new(&model, 64, 64).unwrap();
    let seq = kv.new_sequence();
    let mut batch = Batch::new();
    // A wrong continuation, then rolled back to the first 17 tokens (not a block edge).
    batch.push_seq(&tokens[..17], 0, seq, false);
    batch.push_seq(&[5; 20], 17, seq, false); // 37 tokens: three blocks
    model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap();
    let free_before = kv.n_free_cells();
    assert!(kv.truncate_sequence(seq, 17));
    assert_eq!(kv.n_free_cells(), free_before + BLOCK_CELLS);
    batch.clear();
    batch.push_seq(&tokens[17..], 17, seq, true);
    let out = model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap();
    let err = rel_max_err(out, &whole[17 * n_vocab..]);
    assert!(err <= PATH_TOLERANCE, "{err:e}");
}

#[test]
fn refused_batches_change_nothing() {
    let pool = ThreadPool::new(2).unwrap();
    let file = tiny_file("llama_f32");
    let model = Model::load(&file).unwrap();
    let mut kv = KvCache::new(model.hparams(), 2 * BLOCK_CELLS).unwrap();
    let mut scratch = Scratch::new(&model, 8, 4).unwrap();
    let seq = kv.new_sequence();
    let mut batch = Batch::new();
    batch.push_seq(&[1, 2, 3], 0, seq, false);
    model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap();
    let free = kv.n_free_cells();

    let mut check = |batch: &Batch, kv: &mut KvCache| -> ModelError {
        let err = model.forward(&pool, kv, &mut scratch, batch).unwrap_err();
        assert_eq!(kv.seq_len(seq), Some(3), "{err}");
        assert_eq!(kv.n_free_cells(), free, "{err}");
        err
    };

    let mut b = Batch::new();
    b.push(3, 3, seq, true);
    b.push(tiny::N_VOCAB as u32, 4, seq, true);
    assert!(matches!(
        check(&b, &mut kv),
        ModelError::TokenOutOfRange { index: 1, .. }
    ));

    b.clear();
    b.push(3, 2, seq, true); // position 2 is already cached
    assert!(matches!(
        check(&b, &mut kv),
        ModelError::Position { prev: 2, .. }
    ));

    b.clear();
    b.push(3, 5, seq, false);
    b.push(3, 5, seq, false); // not increasing within the batch
    assert!(matches!(
        check(&b, &mut kv),
        ModelError::Position { index: 1, .. }
    ));

    b.clear();
    let other = kv.new_sequence();
    kv.remove_sequence(other);
    b.push(3, 0, other, true);
    assert!(matches!(
        check(&b, &mut kv),
        ModelError::UnknownSequence { .. }
    ));

    b.clear();
    b.push_seq(&[4; 5], 3, seq, true); // five rows of logits, the scratch holds four
    assert!(matches!(
        check(&b, &mut kv),
        ModelError::TooManyOutputs {
            n_outputs: 5,
            max: 4
        }
    ));

    b.clear();
    b.push_seq(&[4; 30], 3, seq, false); // 33 cells in a 32-cell cache
    assert!(matches!(check(&b, &mut kv), ModelError::CacheFull { .. }));

    // A cache and a scratch of another model are refused.
    let file2 = tiny_file("qwen3_f32");
    let model2 = Model::load(&file2).unwrap();
    let mut kv2 = KvCache::new(model2.hparams(), 16).unwrap();
    let seq2 = kv2.new_sequence();
    b.clear();
    b.push(1, 0, seq2, true);
    let err = model2
        .forward(&pool, &mut kv2, &mut scratch, &b)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Config {
                what: "scratch",
                ..
            }
        ),
        "{err}"
    );
    let mut scratch2 = Scratch::new(&model2, 8, 4).unwrap();
    b.clear();
    b.push(1, 3, seq, true);
    let err = model2
        .forward(&pool, &mut kv, &mut scratch2, &b)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Config {
                what: "KV cache",
                ..
            }
        ),
        "{err}"
    );

    // After all that, the sequence continues normally, and a full cache recycles.
    b.clear();
    b.push_seq(&[4; 29], 3, seq, true);
    let mut big = Scratch::new(&model, 8, 29).unwrap();
    model.forward(&pool, &mut kv, &mut big, &b).unwrap();
    assert_eq!(kv.n_free_cells(), 0);
    kv.clear();
    assert_eq!(kv.n_free_cells(), 2 * BLOCK_CELLS);
    let seq = kv.new_sequence();
    b.clear();
    b.push_seq(&[4; 32], 0, seq, false);
    model.forward(&pool, &mut kv, &mut big, &b).unwrap();
}

#[test]
fn gaps_in_positions_are_positions() {
    // Positions need only increase: a sequence at positions 10, 12, 14, ... attends as
    // the numpy reference would (RoPE and masks see the positions, not the indices).
    // Checked against the same model run at consecutive positions: the logits differ.
    let pool = ThreadPool::new(1).unwrap();
    let file = tiny_file("llama_f32");
    let model = Model::load(&file).unwrap();
    let tokens = &tiny::test_tokens(20)[..6];
    let mut kv = KvCache::new(model.hparams(), 16).unwrap();
    let mut scratch = Scratch::new(&model, 8, 8).unwrap();
    let seq = kv.new_sequence();
    let mut batch = Batch::new();
    for (i, &t) in tokens.iter().enumerate() {
        batch.push(t, 10 + 2 * i as u32, seq, true);
    }
    let gapped = model
        .forward(&pool, &mut kv, &mut scratch, &batch)
        .unwrap()
        .to_vec();
    let plain = logits_batch(&model, &pool, tokens, 8);
    let n_vocab = model.hparams().n_vocab;
    // The first token attends to itself only: its logits do not depend on position.
    assert!(rel_max_err(&gapped[..n_vocab], &plain[..n_vocab]) <= PATH_TOLERANCE);
    assert!(rel_max_err(&gapped, &plain) > 1e-3);
    assert_eq!(kv.seq_next_pos(seq), Some(21));
}

/// A reduced cache changes the logits only by its rounding: every tiny model's logits
/// with f16 and Q8_0 keys and values, against the f32 cache's, relative to the largest
/// logit. Measured on the models with float weights: f16 ≤ 3.2e-4, Q8_0 ≤ 7.0e-3; with
/// quantized weights, whose activations are quantized to 8 bits before each product (so
/// that a small change can flip a rounding, which these random models amplify): f16 ≤
/// 2.4e-2, Q8_0 ≤ 2.7e-2. The bounds are about four times those. (The fidelity gates
/// against llama.cpp check real models.)
#[test]
fn reduced_kv_types_stay_close_to_f32() {
    use hearth_models::{KvType, KvTypes};
    let pool = ThreadPool::new(2).unwrap();
    let tokens = tiny::test_tokens(20);
    let mut worst = [0.0f64; 2];
    for spec in tiny::specs() {
        let file = tiny_file(spec.name);
        let model = Model::load(&file).unwrap();
        let run = |types: KvTypes| {
            let mut kv = KvCache::with_types(model.hparams(), 64, types).unwrap();
            let mut scratch = Scratch::new(&model, tokens.len(), tokens.len()).unwrap();
            let seq = kv.new_sequence();
            let mut batch = Batch::new();
            batch.push_seq(&tokens, 0, seq, true);
            model
                .forward(&pool, &mut kv, &mut scratch, &batch)
                .unwrap()
                .to_vec()
        };
        let float = spec.name.ends_with("_f32") || spec.name.ends_with("_f16");
        if spec.moe.is_some() && !float {
            // Left out: with quantized activations, a cache's rounding flips which
            // experts some tokens take in these random models (0.26 on ds3_q with f16),
            // which measures the routing's sensitivity, not the cache. Their F32 twins
            // stay in.
            continue;
        }
        let want = run(KvTypes::F32);
        // Float models with experts: Q8_0's rounding of the latent rows (keys and values
        // at once) moves the routing of a few tokens (3.5e-2 on ds2lite_f32).
        let bounds = match (float, spec.moe.is_some()) {
            (true, false) => [1.5e-3, 3e-2],
            (true, true) => [1.5e-3, 0.1],
            (false, _) => [0.1, 0.1],
        };
        for (w, (t, bound)) in worst
            .iter_mut()
            .zip([(KvType::F16, bounds[0]), (KvType::Q8_0, bounds[1])])
        {
            let err = rel_max_err(&run(KvTypes::both(t)), &want);
            assert!(err <= bound, "{} {t}: {err:e} > {bound:e}", spec.name);
            *w = w.max(err);
        }
    }
    eprintln!("worst: f16 {:e}, q8_0 {:e}", worst[0], worst[1]);
}
