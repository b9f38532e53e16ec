//! One sampling step over Gemma 3's 262,144-token vocabulary: the engine thread runs one
//! per decoding sequence per step while the compute pool waits, so with four streams it
//! is four of these between forward passes. Greedy, the default chain (top-k 40, top-p
//! 0.95, min-p 0.05, temperature 0.8), both with a few tokens banned (as `ignore_eos`
//! does), and the default chain with a repeat penalty over a window of 64 tokens.

use criterion::{criterion_group, criterion_main, Criterion};
use hearth_engine::sampler::{Pcg64, Penalties, Sampler, SamplerParams};

const N_VOCAB: usize = 262_144;

fn sample(c: &mut Criterion) {
    let mut rng = Pcg64::from_seed(7);
    let logits: Vec<f32> = (0..N_VOCAB)
        .map(|_| (rng.next_f64() * 20.0 - 10.0) as f32)
        .collect();
    let mut g = c.benchmark_group("sample_262k");
    g.sample_size(20);
    g.warm_up_time(std::time::Duration::from_millis(300));
    g.measurement_time(std::time::Duration::from_secs(1));
    let banned = vec![(1, f32::NEG_INFINITY), (106, f32::NEG_INFINITY)];
    let repeat = Penalties {
        repeat: 1.1,
        ..Penalties::default()
    };
    let chains = [
        ("greedy", 0.0, Vec::new(), Penalties::default()),
        ("greedy_banned", 0.0, banned.clone(), Penalties::default()),
        ("default", 0.8, Vec::new(), Penalties::default()),
        ("default_banned", 0.8, banned, Penalties::default()),
        ("default_repeat_penalty", 0.8, Vec::new(), repeat),
    ];
    for (name, temperature, logit_bias, penalties) in chains {
        let params = SamplerParams {
            temperature,
            logit_bias,
            penalties,
            ..SamplerParams::default()
        };
        let mut s = Sampler::new(&params, N_VOCAB).expect("valid parameters");
        for t in 0..64 {
            s.accept(t * 97).expect("in the vocabulary");
        }
        g.bench_function(name, |b| b.iter(|| s.sample(&logits).expect("a token")));
    }
    g.finish();
}

criterion_group!(benches, sample);
criterion_main!(benches);
