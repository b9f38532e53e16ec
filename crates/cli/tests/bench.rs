//! `hearth bench` as a user runs it: the real binary on tiny models. The JSON must have
//! llama-bench's shape with self-consistent values, the weight bytes per token must be
//! what the model's architecture says a decode step multiplies, and bad input must give a
//! one-line error, a non-zero exit and no panic. Speeds themselves are not checked (no
//! timed tests): only that they are positive and consistent with the samples.

mod common;

use common::{hearth, refused, scratch_file, stderr, stdout};
use hearth_models::tiny::{self, TinySpec, N_VOCAB};
use serde_json::Value;

fn spec(name: &str) -> TinySpec {
    tiny::specs().into_iter().find(|s| s.name == name).unwrap()
}

/// Bytes of the matrices one decode step multiplies, from the architecture: per layer
/// Q, K, V, output and the three FFN matrices, plus the output head (the embedding when
/// tied). Norms, biases and the looked-up embedding rows are not counted.
fn expected_weight_bytes(s: &TinySpec, bytes_per_weight: u64) -> u64 {
    let hd = s.head_dim.unwrap_or(s.n_embd / s.n_head);
    let (n_embd, n_q, n_kv, n_ff) = (s.n_embd, s.n_head * hd, s.n_head_kv * hd, s.n_ff);
    let per_layer = n_embd * n_q + 2 * n_embd * n_kv + n_q * n_embd + 3 * n_embd * n_ff;
    let head = n_embd * N_VOCAB;
    (s.n_layer * per_layer + head) as u64 * bytes_per_weight
}

fn bench_json(model: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["bench", model.to_str().unwrap()];
    all.extend_from_slice(args);
    all.push("--json");
    let out = hearth(&all);
    assert!(out.status.success(), "{all:?} failed:\n{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).expect("stdout is one JSON value");
    json.as_array().expect("a JSON array").clone()
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned integer in {v}"))
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs())
}

#[test]
fn json_has_llama_bench_shape_and_consistent_values() {
    let s = spec("llama_f32");
    let model = scratch_file("bench_llama_f32.gguf", &s.to_bytes());
    let rows = bench_json(&model, &["-p", "16", "-n", "4", "-t", "1,2", "-r", "3"]);

    // One row per (threads, test), in llama-bench's order.
    let order: Vec<(u64, u64, u64)> = rows
        .iter()
        .map(|r| (u(r, "n_threads"), u(r, "n_prompt"), u(r, "n_gen")))
        .collect();
    assert_eq!(order, [(1, 16, 0), (1, 0, 4), (2, 16, 0), (2, 0, 4)]);

    let weight_bytes = expected_weight_bytes(&s, 4);
    for r in &rows {
        for key in ["model_filename", "model_type"] {
            assert!(r[key].is_string(), "{key} missing in {r}");
        }
        assert_eq!(r["model_filename"], model.to_str().unwrap());
        assert!(r["model_type"].as_str().unwrap().starts_with("llama"));
        // The file holds the tensors plus header and padding.
        let size = u(r, "model_size");
        let file_len = std::fs::metadata(&model).unwrap().len();
        assert!(size > weight_bytes && size < file_len, "model_size {size}");
        // All weights are f32, so parameters are bytes / 4.
        assert_eq!(u(r, "model_n_params") * 4, size);
        assert!(u(r, "n_batch") >= u(r, "n_prompt"));

        let n_tokens = (u(r, "n_prompt") + u(r, "n_gen")) as f64;
        let ns: Vec<u64> = r["samples_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let ts: Vec<f64> = r["samples_ts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!((ns.len(), ts.len()), (3, 3), "one sample per repetition");
        for (&n, &t) in ns.iter().zip(&ts) {
            assert!(n > 0 && t > 0.0);
            assert!(
                close(t, n_tokens * 1e9 / n as f64, 1e-9),
                "{t} t/s for {n} ns"
            );
        }
        let mean_ts = ts.iter().sum::<f64>() / 3.0;
        let mean_ns = ns.iter().sum::<u64>() as f64 / 3.0;
        assert!(close(f(r, "avg_ts"), mean_ts, 1e-9));
        assert!((f(r, "avg_ns") - mean_ns).abs() <= 1.0);
        let sd = (ts.iter().map(|t| (t - mean_ts).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!(close(f(r, "stddev_ts"), sd, 1e-6) || sd < 1e-9);
        assert!(f(r, "stddev_ns") >= 0.0);

        assert_eq!(u(r, "weight_bytes_per_token"), weight_bytes);
        let bw = f(r, "read_bandwidth_bytes_per_s");
        // Any machine this runs on reads between 100 MB/s and 10 TB/s.
        assert!(bw > 1e8 && bw < 1e13, "bandwidth {bw}");
        let small = f(r, "read_bandwidth_4k_bytes_per_s");
        let huge = r["read_bandwidth_hugepage_bytes_per_s"].as_f64();
        assert_eq!(
            bw,
            huge.map_or(small, |h| h.max(small)),
            "the limit is the better one"
        );
        let limit = f(r, "bandwidth_limit_ts");
        assert!(close(limit, bw / weight_bytes as f64, 1e-9));
        if u(r, "n_gen") > 0 {
            assert!(close(f(r, "share_of_limit"), f(r, "avg_ts") / limit, 1e-9));
        } else {
            assert!(r["share_of_limit"].is_null(), "pp rows have no share");
        }
    }
}

#[test]
fn tied_output_counts_the_embedding_once_and_biases_not_at_all() {
    let s = spec("qwen2_f16");
    assert!(s.tied_output && s.qkv_bias);
    let model = scratch_file("bench_qwen2_f16.gguf", &s.to_bytes());
    let rows = bench_json(&model, &["-p", "0", "-n", "2", "-t", "1", "-r", "1"]);
    assert_eq!(rows.len(), 1, "-p 0 skips the pp test");
    assert_eq!(u(&rows[0], "n_gen"), 2);
    // F16 and BF16 weights: two bytes each.
    assert_eq!(
        u(&rows[0], "weight_bytes_per_token"),
        expected_weight_bytes(&s, 2)
    );
    assert_eq!(rows[0]["stddev_ts"].as_f64(), Some(0.0), "one sample");
}

#[test]
fn table_like_llama_bench() {
    let model = scratch_file("bench_table.gguf", &spec("llama_f32").to_bytes());
    let out = hearth(&[
        "bench",
        model.to_str().unwrap(),
        "-p",
        "8",
        "-n",
        "2",
        "-t",
        "1",
        "-r",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].replace(' ', ""),
        "|model|size|params|threads|type_k|type_v|test|t/s|",
        "llama-bench's columns (less backend)"
    );
    for test in ["| pp8 |", "| tg2 |"] {
        assert!(
            lines
                .iter()
                .any(|l| l.replace(' ', "").contains(&test.replace(' ', ""))),
            "no {test} row in:\n{text}"
        );
    }
    assert!(text.contains("weights read per generated token"), "{text}");
    assert!(text.contains("share of limit"), "{text}");
}

#[test]
fn bad_input_is_refused_in_one_line() {
    let model = scratch_file("bench_refused.gguf", &spec("llama_f32").to_bytes());
    let m = model.to_str().unwrap();
    refused(&["bench", "/no/such/model.gguf"], "no such file");
    let not_gguf = scratch_file("bench_not_gguf.gguf", b"not a gguf file at all");
    refused(
        &["bench", not_gguf.to_str().unwrap()],
        "not a readable GGUF",
    );
    refused(&["bench", m, "-t", "1,x"], "-t");
    refused(&["bench", m, "-t", ""], "-t");
    refused(&["bench", m, "-t", "0"], "at least 1");
    refused(&["bench", m, "-r", "0"], "-r must be at least 1");
    refused(&["bench", m, "-p", "0", "-n", "0"], "nothing to measure");
    // The tiny models are trained on 128 positions.
    refused(&["bench", m, "-p", "120", "-n", "16"], "context");
    refused(&["bench", m, "-p", "8", "-n", "8", "-d", "120"], "-d 120");
    // Argument errors are clap's (`error: invalid value ...`), with our message.
    let out = hearth(&["bench", m, "--cache-type-k", "q4_0"]);
    let err = stderr(&out);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("unknown KV cache type \"q4_0\" (valid: f32, f16, q8_0)"),
        "{err}"
    );
}

#[test]
fn depth_and_cache_types_reach_the_report() {
    let model = scratch_file("bench_depth.gguf", &spec("llama_f32").to_bytes());
    let m = model.to_str().unwrap();
    let args = ["-p", "8", "-n", "2", "-d", "40", "-t", "1", "-r", "1"];
    let mut with_types = args.to_vec();
    with_types.extend(["--cache-type-k", "q8_0", "--cache-type-v", "f32"]);
    for (args, (k, v)) in [
        (args.to_vec(), ("f16", "f16")),
        (with_types, ("q8_0", "f32")),
    ] {
        let rows = bench_json(&model, &args);
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert_eq!(u(r, "n_depth"), 40, "{r}");
            assert_eq!(
                (r["type_k"].as_str(), r["type_v"].as_str()),
                (Some(k), Some(v))
            );
            assert!(f(r, "avg_ts") > 0.0);
        }
    }
    let out = hearth(&[
        "bench", m, "-p", "8", "-n", "2", "-d", "40", "-t", "1", "-r", "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for test in ["pp8 @ d40", "tg2 @ d40"] {
        assert!(text.contains(test), "no {test} row in:\n{text}");
    }
}
