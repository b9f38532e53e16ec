//! Broken model files are refused with a typed error that names the key or tensor at
//! fault, and never make the loader panic or allocate by a corrupt count.

mod common;

use common::*;
use hearth_gguf::{GgufFile, GgufWriter, TensorType, Value};
use hearth_models::{Model, ModelError};

/// A copy of the tiny model `name` with metadata `set` applied and tensors rewritten by
/// `tensor` (which may drop one by returning `None`, or change its type, shape and bytes).
fn edited(
    name: &str,
    set: &[(&str, Value)],
    tensor: impl Fn(&str, TensorType, &[u64], &[u8]) -> Option<(TensorType, Vec<u64>, Vec<u8>)>,
) -> GgufFile {
    let orig = tiny_file(name);
    let mut w = GgufWriter::new();
    for (k, v) in orig.metadata().iter() {
        w.set(k, v.clone());
    }
    for (k, v) in set {
        w.set(*k, v.clone());
    }
    for t in orig.tensors() {
        if let Some((ty, shape, data)) = tensor(t.name(), t.ty(), t.shape(), orig.tensor_data(t)) {
            w.add_tensor(t.name(), ty, &shape, data).unwrap();
        }
    }
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

fn keep(
    _: &str,
    ty: TensorType,
    shape: &[u64],
    data: &[u8],
) -> Option<(TensorType, Vec<u64>, Vec<u8>)> {
    Some((ty, shape.to_vec(), data.to_vec()))
}

fn load_err(file: &GgufFile) -> ModelError {
    match Model::load(file) {
        Ok(_) => panic!("loaded a broken file"),
        Err(e) => e,
    }
}

#[test]
fn unedited_tiny_models_load() {
    for spec in hearth_models::tiny::specs() {
        let file = tiny_file(spec.name);
        let model = Model::load(&file).unwrap();
        assert_eq!(model.arch(), spec.arch);
        assert_eq!(model.hparams().n_vocab, hearth_models::tiny::N_VOCAB);
    }
}

#[test]
fn unknown_architecture() {
    let f = edited(
        "llama_f32",
        &[("general.architecture", "mamba".into())],
        keep,
    );
    assert!(matches!(load_err(&f), ModelError::UnsupportedArchitecture(a) if a == "mamba"));
}

#[test]
fn missing_and_mistyped_keys() {
    // `llama.block_count` written as a string.
    let f = edited("llama_f32", &[("llama.block_count", "two".into())], keep);
    let e = load_err(&f);
    assert!(e.to_string().contains("llama.block_count"), "{e}");
    // A float key as an integer.
    let f = edited(
        "llama_f32",
        &[("llama.attention.layer_norm_rms_epsilon", Value::U32(1))],
        keep,
    );
    let e = load_err(&f);
    assert!(e.to_string().contains("layer_norm_rms_epsilon"), "{e}");
}

#[test]
fn inconsistent_hyper_parameters() {
    let cases: &[(&str, Value, &str)] = &[
        ("llama.attention.head_count", Value::U32(0), "head_count"),
        (
            "llama.attention.head_count_kv",
            Value::U32(3),
            "head_count_kv",
        ),
        (
            "llama.attention.head_count_kv",
            Value::U32(0),
            "head_count_kv",
        ),
        ("llama.block_count", Value::U32(1_000_000), "block_count"),
        ("llama.block_count", Value::U64(u64::MAX), "block_count"),
        (
            "llama.context_length",
            Value::U64(1 << 40),
            "context_length",
        ),
        ("llama.context_length", Value::U32(0), "context_length"),
        ("llama.embedding_length", Value::U32(0), "embedding_length"),
        (
            "llama.rope.dimension_count",
            Value::U32(63),
            "rope.dimension_count",
        ),
        ("llama.rope.freq_base", Value::F32(f32::NAN), "freq_base"),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(-1.0),
            "epsilon",
        ),
        ("llama.rope.scaling.type", "longrope".into(), "longrope"),
        (
            "llama.rope.scaling.factor",
            Value::F32(-2.0),
            "scaling.factor",
        ),
        ("llama.expert_count", Value::U32(8), "experts"),
        (
            "llama.attention.head_count",
            Value::Array(vec![4u32, 4].into()),
            "per-layer",
        ),
    ];
    for (key, value, needle) in cases {
        let f = edited("llama_f32", &[(key, value.clone())], keep);
        let e = load_err(&f);
        assert!(e.to_string().contains(needle), "{key} = {value:?}: {e}");
    }
    // A block count that the file's tensors do not cover: the missing layer is named.
    let f = edited("llama_f32", &[("llama.block_count", Value::U32(3))], keep);
    assert!(matches!(load_err(&f), ModelError::MissingTensor(t) if t.starts_with("blk.2.")));
    // Gemma's window.
    let f = edited(
        "gemma3_f32",
        &[(
            "gemma3.attention.sliding_window_pattern",
            Value::Array(vec![true].into()),
        )],
        keep,
    );
    assert!(load_err(&f).to_string().contains("sliding_window_pattern"));
}

/// DeepSeek's and Qwen3-MoE's own keys: an unknown gating function, groups that do not
/// split the experts, more experts used than exist, MLA head sizes that contradict the
/// latent ranks, a latent rank the tensors do not have.
#[test]
fn inconsistent_expert_and_latent_parameters() {
    let cases: &[(&str, &str, Value, &str)] = &[
        (
            "ds3_f32",
            "deepseek2.expert_gating_func",
            Value::U32(7),
            "expert_gating_func",
        ),
        (
            "ds3_f32",
            "deepseek2.expert_group_count",
            Value::U32(3),
            "expert_group_count",
        ),
        (
            "ds3_f32",
            "deepseek2.expert_used_count",
            Value::U32(9),
            "expert_used_count",
        ),
        (
            "ds3_f32",
            "deepseek2.expert_count",
            Value::U32(0),
            "expert_count",
        ),
        (
            "ds3_f32",
            "deepseek2.expert_weights_scale",
            Value::F32(-1.0),
            "expert_weights_scale",
        ),
        (
            "ds3_f32",
            "deepseek2.attention.key_length",
            Value::U32(150),
            "key_length",
        ),
        (
            "ds3_f32",
            "deepseek2.leading_dense_block_count",
            Value::U32(4),
            "leading_dense_block_count",
        ),
        (
            "ds3_f32",
            "deepseek2.rope.scaling.yarn_log_multiplier",
            Value::F32(-0.1),
            "yarn_log_multiplier",
        ),
        (
            "ds2legacy_f32",
            "deepseek2.attention.key_length_mla",
            Value::U32(96),
            "key_length_mla",
        ),
        (
            "ds2legacy_f32",
            "deepseek2.rope.dimension_count",
            Value::U32(96),
            "rope.dimension_count",
        ),
        (
            "qwen3moe_f32",
            "qwen3moe.expert_used_count",
            Value::U32(0),
            "expert_used_count",
        ),
        (
            "qwen3moe_f32",
            "qwen3moe.expert_gating_func",
            Value::U32(3),
            "expert_gating_func",
        ),
    ];
    for (model, key, value, needle) in cases {
        let f = edited(model, &[(key, value.clone())], keep);
        let e = load_err(&f);
        assert!(
            e.to_string().contains(needle),
            "{model}: {key} = {value:?}: {e}"
        );
    }
    // A latent rank the tensors do not have: the first tensor shaped by it is named.
    let f = edited(
        "ds2lite_f32",
        &[("deepseek2.attention.kv_lora_rank", Value::U32(96))],
        keep,
    );
    let e = load_err(&f);
    assert!(e.to_string().contains("key_length"), "{e}");
    let f = edited(
        "ds2legacy_f32",
        &[("deepseek2.attention.kv_lora_rank", Value::U32(96))],
        keep,
    );
    assert!(
        matches!(load_err(&f), ModelError::TensorShape { tensor, .. } if tensor.starts_with("blk.0.")),
    );
    // Without the fused experts, the separate ones are looked for, and named.
    let f = edited("ds2lite_f32", &[], |n, ty, s, d| {
        (n != "blk.1.ffn_gate_up_exps.weight").then(|| (ty, s.to_vec(), d.to_vec()))
    });
    assert!(
        matches!(load_err(&f), ModelError::MissingTensor(t) if t == "blk.1.ffn_gate_exps.weight")
    );
}

#[test]
fn missing_tensors() {
    for name in [
        "token_embd.weight",
        "blk.1.ffn_down.weight",
        "output_norm.weight",
    ] {
        let f = edited("llama_f32", &[], |n, ty, s, d| {
            (n != name).then(|| (ty, s.to_vec(), d.to_vec()))
        });
        assert!(
            matches!(load_err(&f), ModelError::MissingTensor(t) if t == name),
            "{name}"
        );
    }
    // Qwen2's biases are required; Qwen3's and Gemma's head norms too.
    for (model, name) in [
        ("qwen2_q8_0", "blk.0.attn_k.bias"),
        ("qwen3_f32", "blk.1.attn_q_norm.weight"),
        ("gemma3_q", "blk.5.post_ffw_norm.weight"),
        // DeepSeek's latent attention, experts, shared experts and dense lead.
        ("ds3_q", "blk.2.attn_k_b.weight"),
        ("ds3_q", "blk.1.attn_q_a_norm.weight"),
        ("ds3_f32", "blk.1.ffn_down_exps.weight"),
        ("ds3_f32", "blk.2.ffn_up_shexp.weight"),
        ("ds3_f32", "blk.0.ffn_gate.weight"),
        ("ds2legacy_q", "blk.0.attn_kv_b.weight"),
        ("qwen3moe_q", "blk.1.ffn_gate_inp.weight"),
    ] {
        let f = edited(model, &[], |n, ty, s, d| {
            (n != name).then(|| (ty, s.to_vec(), d.to_vec()))
        });
        assert!(
            matches!(load_err(&f), ModelError::MissingTensor(t) if t == name),
            "{name}"
        );
    }
}

#[test]
fn mis_shaped_and_mistyped_tensors() {
    // attn_q transposed: same bytes, wrong shape.
    let f = edited("qwen3_f32", &[], |n, ty, s, d| {
        let s = if n == "blk.0.attn_q.weight" {
            vec![s[1], s[0]]
        } else {
            s.to_vec()
        };
        Some((ty, s, d.to_vec()))
    });
    let e = load_err(&f);
    assert!(
        matches!(&e, ModelError::TensorShape { tensor, .. } if tensor == "blk.0.attn_q.weight"),
        "{e}"
    );
    // A norm weight one element short.
    let f = edited("llama_f32", &[], |n, ty, s, d| {
        if n == "blk.0.ffn_norm.weight" {
            Some((ty, vec![s[0] - 1], d[4..].to_vec()))
        } else {
            Some((ty, s.to_vec(), d.to_vec()))
        }
    });
    assert!(matches!(load_err(&f), ModelError::TensorShape { .. }));
    // A matrix stored as integers.
    let f = edited("llama_f32", &[], |n, ty, s, d| {
        let ty = if n == "blk.1.attn_v.weight" {
            TensorType::I32
        } else {
            ty
        };
        Some((ty, s.to_vec(), d.to_vec()))
    });
    let e = load_err(&f);
    assert!(
        matches!(&e, ModelError::TensorType { tensor, .. } if tensor == "blk.1.attn_v.weight"),
        "{e}"
    );
}

#[test]
fn unused_tensors_are_refused() {
    let orig = tiny_file("llama_f32");
    let mut w = GgufWriter::new();
    for (k, v) in orig.metadata().iter() {
        w.set(k, v.clone());
    }
    for t in orig.tensors() {
        w.add_tensor(t.name(), t.ty(), t.shape(), orig.tensor_data(t))
            .unwrap();
    }
    w.add_tensor(
        "blk.0.ffn_gate_inp.weight",
        TensorType::F32,
        &[256, 8],
        vec![0u8; 256 * 8 * 4],
    )
    .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert!(
        matches!(load_err(&f), ModelError::UnusedTensor(t) if t == "blk.0.ffn_gate_inp.weight")
    );
}

/// DeepSeek-V3's multi-token-prediction block (`nextn_predict_layers`) sits after the
/// trunk, counted in `block_count`: it is loaded past, not run and not refused, and the
/// logits are the trunk's. Without the key, its tensors are a block like any other, and
/// the unknown `nextn.*` ones are refused.
#[test]
fn multi_token_prediction_blocks_are_skipped() {
    use hearth_kernels::pool::ThreadPool;
    let orig = tiny_file("ds3_f32");
    let with_mtp = |declared: bool| {
        let mut w = GgufWriter::new();
        for (k, v) in orig.metadata().iter() {
            w.set(k, v.clone());
        }
        w.set("deepseek2.block_count", Value::U32(4));
        if declared {
            w.set("deepseek2.nextn_predict_layers", Value::U32(1));
        }
        for t in orig.tensors() {
            w.add_tensor(t.name(), t.ty(), t.shape(), orig.tensor_data(t).to_vec())
                .unwrap();
            if let Some(rest) = t.name().strip_prefix("blk.2.") {
                let data = orig.tensor_data(t).to_vec();
                w.add_tensor(format!("blk.3.{rest}"), t.ty(), t.shape(), data)
                    .unwrap();
            }
        }
        w.add_tensor(
            "blk.3.nextn.eh_proj.weight",
            TensorType::F32,
            &[512, 256],
            vec![0u8; 512 * 256 * 4],
        )
        .unwrap();
        GgufFile::from_bytes(w.to_bytes()).unwrap()
    };
    let f = with_mtp(true);
    let model = Model::load(&f).unwrap();
    assert_eq!(
        (model.hparams().n_layer, model.hparams().n_layer_nextn),
        (3, 1)
    );
    let pool = ThreadPool::new(2).unwrap();
    let tokens = hearth_models::tiny::test_tokens(20);
    let base = Model::load(&orig).unwrap();
    assert_eq!(
        logits_batch(&model, &pool, &tokens, 64),
        logits_batch(&base, &pool, &tokens, 64)
    );
    let f = with_mtp(false);
    assert!(
        matches!(load_err(&f), ModelError::UnusedTensor(t) if t == "blk.3.nextn.eh_proj.weight")
    );
}
