//! The sampler's steps against straightforward reference computations (sort everything,
//! softmax in f64, filter), its validation, its determinism, and the draw's statistics.

use std::collections::{BTreeMap, BTreeSet};

use hearth_engine::sampler::{
    Candidate, Pcg64, Penalties, Sampler, SamplerError, SamplerParams, Step,
};
use hearth_kernels::ops::select::KEY_BLOCK;
use hearth_kernels::ops::Ops;

/// Logits spread like a model's: mostly small, a few large.
fn random_logits(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Pcg64::from_seed(seed);
    (0..n)
        .map(|_| {
            let u = rng.next_f64();
            let v = rng.next_f64();
            (u * 8.0 - 4.0 + if v < 0.02 { 6.0 } else { 0.0 }) as f32
        })
        .collect()
}

/// One step alone (`with_steps`), its survivors sorted by id.
fn run_step(step: Step, logits: &[f32]) -> BTreeMap<u32, f32> {
    let mut s = Sampler::with_steps(vec![step], 0, logits.len()).unwrap();
    s.apply(logits)
        .unwrap()
        .iter()
        .map(|c| (c.id, c.logit))
        .collect()
}

/// All ids in descending logit order, ties by id.
fn ref_order(logits: &[f32]) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|&a, &b| {
        logits[b as usize]
            .partial_cmp(&logits[a as usize])
            .unwrap()
            .then(a.cmp(&b))
    });
    ids
}

fn ref_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

fn keys(m: &BTreeMap<u32, f32>) -> BTreeSet<u32> {
    m.keys().copied().collect()
}

#[test]
fn top_k_keeps_the_k_largest() {
    for (seed, n, k) in [
        (1, 100, 1),
        (2, 100, 7),
        (3, 5000, 40),
        (4, 10, 10),
        (5, 10, 50),
    ] {
        let logits = random_logits(n, seed);
        let got = run_step(Step::TopK(k), &logits);
        let want: BTreeSet<u32> = ref_order(&logits).into_iter().take(k).collect();
        assert_eq!(keys(&got), want, "seed {seed} k {k}");
        for (id, l) in &got {
            assert_eq!(*l, logits[*id as usize]);
        }
    }
    // k = 0 keeps everything.
    let logits = random_logits(50, 9);
    assert_eq!(run_step(Step::TopK(0), &logits).len(), 50);
}

#[test]
fn top_k_survivors_come_sorted() {
    let logits = random_logits(1000, 11);
    let mut s = Sampler::with_steps(vec![Step::TopK(25)], 0, 1000).unwrap();
    let ids: Vec<u32> = s.apply(&logits).unwrap().iter().map(|c| c.id).collect();
    assert_eq!(ids, ref_order(&logits)[..25]);
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    // n = 5000 with flat logits makes the nucleus thousands of tokens, past several of
    // the sampler's growing sort chunks.
    for (seed, n, p) in [
        (1, 100, 0.5),
        (2, 100, 0.9),
        (3, 5000, 0.95),
        (4, 5000, 0.3),
        (5, 20, 0.999),
        (6, 20, 1e-6),
    ] {
        let logits = random_logits(n, seed);
        let got = run_step(Step::TopP(p), &logits);
        let probs = ref_softmax(&logits);
        let mut want = BTreeSet::new();
        let mut cum = 0.0;
        for id in ref_order(&logits) {
            want.insert(id);
            cum += probs[id as usize];
            if cum >= f64::from(p) {
                break;
            }
        }
        assert_eq!(keys(&got), want, "seed {seed} p {p}");
    }
    let logits = random_logits(50, 9);
    assert_eq!(run_step(Step::TopP(1.0), &logits).len(), 50);
}

#[test]
fn min_p_keeps_tokens_at_least_p_times_the_best() {
    for (seed, n, p) in [(1, 100, 0.05), (2, 1000, 0.1), (3, 1000, 0.5), (4, 30, 1.0)] {
        let logits = random_logits(n, seed);
        let got = run_step(Step::MinP(p), &logits);
        let probs = ref_softmax(&logits);
        let best = probs.iter().cloned().fold(0.0, f64::max);
        let want: BTreeSet<u32> = (0..n as u32)
            .filter(|&i| probs[i as usize] >= f64::from(p) * best * (1.0 - 1e-6))
            .collect();
        assert_eq!(keys(&got), want, "seed {seed} p {p}");
    }
    let logits = random_logits(50, 9);
    assert_eq!(run_step(Step::MinP(0.0), &logits).len(), 50);
}

#[test]
fn temperature_divides_and_zero_keeps_the_max() {
    let logits = random_logits(64, 3);
    let got = run_step(Step::Temperature(0.5), &logits);
    for (id, l) in &got {
        assert_eq!(*l, logits[*id as usize] / 0.5);
    }
    assert_eq!(got.len(), 64);
    let greedy = run_step(Step::Temperature(0.0), &logits);
    assert_eq!(keys(&greedy), BTreeSet::from([ref_order(&logits)[0]]));
}

/// llama.cpp's penalties: for each distinct token in the window, divide a positive logit
/// by `repeat` (multiply one <= 0), then subtract `count * frequency + presence`.
#[test]
fn penalties_follow_llama_cpp() {
    let n = 40;
    let logits: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 5.0).collect();
    let history = [3u32, 7, 3, 30, 12, 3, 12, 39, 0, 13, 21, 21, 5];
    for last_n in [0usize, 1, 4, 8, 64] {
        let pen = Penalties {
            last_n,
            repeat: 1.3,
            frequency: 0.25,
            presence: 0.6,
        };
        let mut s = Sampler::with_steps(vec![Step::Penalties(pen)], 0, n).unwrap();
        for &t in &history {
            s.accept(t).unwrap();
        }
        let got: BTreeMap<u32, f32> = s
            .apply(&logits)
            .unwrap()
            .iter()
            .map(|c| (c.id, c.logit))
            .collect();
        let window = &history[history.len().saturating_sub(last_n)..];
        for id in 0..n as u32 {
            let count = window.iter().filter(|&&t| t == id).count();
            let mut want = logits[id as usize];
            if count > 0 {
                want = if want <= 0.0 { want * 1.3 } else { want / 1.3 };
                want -= count as f32 * 0.25 + 0.6;
            }
            assert_eq!(got[&id], want, "last_n {last_n} token {id}");
        }
    }
}

#[test]
fn penalties_after_a_truncation_use_the_same_formula() {
    // A custom order: the window step sees candidates that are no longer indexed by id.
    let n = 200;
    let logits = random_logits(n, 21);
    let top: Vec<u32> = ref_order(&logits)[..10].to_vec();
    let pen = Penalties {
        last_n: 16,
        repeat: 2.0,
        frequency: 0.0,
        presence: 0.0,
    };
    let mut s = Sampler::with_steps(vec![Step::TopK(10), Step::Penalties(pen)], 0, n).unwrap();
    s.accept(top[0]).unwrap();
    s.accept(top[3]).unwrap();
    let got: BTreeMap<u32, f32> = s
        .apply(&logits)
        .unwrap()
        .iter()
        .map(|c| (c.id, c.logit))
        .collect();
    assert_eq!(got.len(), 10);
    for id in &top {
        let l = logits[*id as usize];
        let want = if *id == top[0] || *id == top[3] {
            if l <= 0.0 {
                l * 2.0
            } else {
                l / 2.0
            }
        } else {
            l
        };
        assert_eq!(got[id], want);
    }
}

#[test]
fn logit_bias_adds_and_bans() {
    let n = 16;
    let logits = vec![1.0f32; n];
    let bias = vec![(3, 2.5), (3, 0.5), (9, f32::NEG_INFINITY), (0, -1.0)];
    let got = run_step(Step::LogitBias(bias), &logits);
    assert_eq!(got[&3], 4.0);
    assert_eq!(got[&9], f32::NEG_INFINITY);
    assert_eq!(got[&0], 0.0);
    assert_eq!(got[&1], 1.0);
    // A banned token is never drawn.
    let params = SamplerParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        logit_bias: vec![(5, f32::NEG_INFINITY)],
        ..SamplerParams::default()
    };
    let mut s = Sampler::new(&params, n).unwrap();
    for _ in 0..2000 {
        assert_ne!(s.sample(&logits).unwrap(), 5);
    }
}

#[test]
fn greedy_picks_the_argmax_after_penalties() {
    let params = SamplerParams {
        temperature: 0.0,
        penalties: Penalties {
            repeat: 10.0,
            ..Penalties::default()
        },
        ..SamplerParams::default()
    };
    for seed in 0..20 {
        let logits = random_logits(3000, seed);
        let order = ref_order(&logits);
        let mut s = Sampler::new(&params, logits.len()).unwrap();
        assert_eq!(s.sample(&logits).unwrap(), order[0]);
        // Penalizing the winner hands the win to the runner-up (both logits are large
        // and positive here: the top one is ~+4, the penalty divides it by 10).
        if logits[order[0] as usize] > 0.0 && logits[order[1] as usize] > 0.5 {
            s.accept(order[0]).unwrap();
            assert_eq!(s.sample(&logits).unwrap(), order[1]);
        }
    }
    // Ties go to the lowest id, as llama.cpp's greedy sampler keeps the first maximum.
    let mut s = Sampler::new(&params, 5).unwrap();
    assert_eq!(s.sample(&[0.0, 3.0, 1.0, 3.0, 3.0]).unwrap(), 1);
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let logits = random_logits(500, 5);
    let params = |seed| SamplerParams {
        seed,
        temperature: 1.5,
        top_k: 0,
        top_p: 0.98,
        min_p: 0.0,
        ..SamplerParams::default()
    };
    let run = |seed| {
        let mut s = Sampler::new(&params(seed), 500).unwrap();
        (0..300)
            .map(|_| s.sample(&logits).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

/// The draw is the inverse CDF of the generator's doubles over the candidates in id order
/// (nothing truncated): token `i` is drawn when `u * total` falls in its slice of the
/// cumulative weights. The doubles of seed 42 are NumPy's (see `sampler_rng.rs`), so this
/// pins the tokens a seed gives, across platforms and versions.
#[test]
fn seeded_draws_are_the_inverse_cdf_of_the_generator() {
    let logits = [0.3f32, -1.0, 2.0, 0.0, 1.2, -0.5];
    let probs = ref_softmax(&logits);
    let numpy_doubles = [
        0.15802686859384152,
        0.7336664610327854,
        0.7140943613027889,
        0.7475508149475342,
    ];
    let params = SamplerParams {
        seed: 42,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        ..SamplerParams::default()
    };
    let mut s = Sampler::new(&params, logits.len()).unwrap();
    for u in numpy_doubles {
        let mut cum = 0.0;
        let want = probs
            .iter()
            .position(|p| {
                cum += p;
                u < cum
            })
            .unwrap() as u32;
        assert_eq!(s.sample(&logits).unwrap(), want, "u = {u}");
    }
}

/// Frequencies over many draws match the probabilities the chain leaves, within 5
/// standard deviations. The seed is fixed, so this cannot flake; it fails only if the
/// draw is biased.
#[test]
fn draw_frequencies_match_the_probabilities() {
    let logits = [1.0f32, 0.5, 2.0, -1.0, 0.0, 1.5, -3.0, 0.7];
    let draws = 200_000;
    // Plain softmax at temperature 0.7; then top-k 4 (renormalized over the 4 largest).
    let tempered: Vec<f32> = logits.iter().map(|l| l / 0.7).collect();
    let full = ref_softmax(&tempered);
    let top4: BTreeSet<u32> = ref_order(&logits).into_iter().take(4).collect();
    let masked: Vec<f32> = tempered
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            if top4.contains(&(i as u32)) {
                l
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let truncated = ref_softmax(&masked);
    for (top_k, want) in [(0, full), (4, truncated)] {
        let params = SamplerParams {
            seed: 1234,
            temperature: 0.7,
            top_k,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerParams::default()
        };
        let mut s = Sampler::new(&params, logits.len()).unwrap();
        let mut counts = [0usize; 8];
        for _ in 0..draws {
            counts[s.sample(&logits).unwrap() as usize] += 1;
        }
        for (i, &p) in want.iter().enumerate() {
            let freq = counts[i] as f64 / draws as f64;
            let sd = (p * (1.0 - p) / draws as f64).sqrt();
            assert!(
                (freq - p).abs() <= 5.0 * sd + 1e-9,
                "top_k {top_k} token {i}: frequency {freq} vs probability {p}"
            );
        }
    }
}

#[test]
fn neg_inf_and_nan_logits_never_win_and_never_poison() {
    let n = 1000;
    let mut logits = vec![f32::NEG_INFINITY; n];
    logits[17] = 0.5;
    logits[400] = 0.1;
    logits[999] = f32::NAN;
    for temperature in [0.0, 0.3, 1.0, 2.0] {
        for (top_k, top_p, min_p) in [(0, 1.0, 0.0), (40, 0.95, 0.05), (2, 0.5, 0.0)] {
            let params = SamplerParams {
                temperature,
                top_k,
                top_p,
                min_p,
                ..SamplerParams::default()
            };
            let mut s = Sampler::new(&params, n).unwrap();
            for _ in 0..200 {
                let t = s.sample(&logits).unwrap();
                assert!(t == 17 || t == 400, "drew {t}");
            }
            let live = s.apply(&logits).unwrap();
            assert!(live.iter().all(|c: &Candidate| !c.logit.is_nan()));
        }
    }
    // Everything masked: a typed error, not a panic or an arbitrary token.
    let masked = vec![f32::NEG_INFINITY; n];
    for temperature in [0.0, 1.0] {
        let params = SamplerParams {
            temperature,
            ..SamplerParams::default()
        };
        let mut s = Sampler::new(&params, n).unwrap();
        assert_eq!(s.sample(&masked), Err(SamplerError::AllMasked));
    }
}

#[test]
fn bad_parameters_are_typed_errors() {
    let n = 10;
    let bad = |p: SamplerParams| Sampler::new(&p, n).unwrap_err();
    let d = SamplerParams::default;
    assert_eq!(
        bad(SamplerParams {
            temperature: -0.1,
            ..d()
        }),
        SamplerError::Temperature(-0.1)
    );
    assert!(matches!(
        bad(SamplerParams {
            temperature: f32::NAN,
            ..d()
        }),
        SamplerError::Temperature(_)
    ));
    for p in [0.0, -0.5, 1.01, f32::NAN] {
        assert!(matches!(
            bad(SamplerParams { top_p: p, ..d() }),
            SamplerError::TopP(_)
        ));
    }
    for p in [-0.01, 1.5, f32::NAN] {
        assert!(matches!(
            bad(SamplerParams { min_p: p, ..d() }),
            SamplerError::MinP(_)
        ));
    }
    for r in [0.0, -1.0, f32::INFINITY] {
        let penalties = Penalties {
            repeat: r,
            ..Penalties::default()
        };
        assert!(matches!(
            bad(SamplerParams { penalties, ..d() }),
            SamplerError::RepeatPenalty(_)
        ));
    }
    let penalties = Penalties {
        presence: f32::NAN,
        ..Penalties::default()
    };
    assert!(matches!(
        bad(SamplerParams { penalties, ..d() }),
        SamplerError::Penalty {
            name: "presence_penalty",
            ..
        }
    ));
    let penalties = Penalties {
        last_n: usize::MAX,
        ..Penalties::default()
    };
    assert!(matches!(
        bad(SamplerParams { penalties, ..d() }),
        SamplerError::PenaltyWindow { .. }
    ));
    assert_eq!(
        bad(SamplerParams {
            logit_bias: vec![(10, 1.0)],
            ..d()
        }),
        SamplerError::BiasToken {
            token: 10,
            n_vocab: 10
        }
    );
    assert!(matches!(
        bad(SamplerParams {
            logit_bias: vec![(1, f32::INFINITY)],
            ..d()
        }),
        SamplerError::BiasValue { token: 1, .. }
    ));
    assert_eq!(Sampler::new(&d(), 0).unwrap_err(), SamplerError::EmptyVocab);
    let pen = Step::Penalties(Penalties::default());
    assert_eq!(
        Sampler::with_steps(vec![pen.clone(), pen], 0, n).unwrap_err(),
        SamplerError::DuplicatePenalties
    );
    // Per-step inputs.
    let mut s = Sampler::new(&d(), n).unwrap();
    assert_eq!(
        s.sample(&[0.0; 9]),
        Err(SamplerError::LogitsLength {
            expected: 10,
            got: 9
        })
    );
    assert_eq!(
        s.accept(10),
        Err(SamplerError::Token {
            token: 10,
            n_vocab: 10
        })
    );
}

#[test]
fn reset_forgets_the_window() {
    let n = 8;
    let pen = Penalties {
        last_n: 4,
        repeat: 4.0,
        frequency: 0.0,
        presence: 0.0,
    };
    let mut s = Sampler::with_steps(vec![Step::Penalties(pen)], 0, n).unwrap();
    let logits = [1.0f32; 8];
    for t in [1, 2, 2, 3, 4, 5] {
        s.accept(t).unwrap();
    }
    // Window of 4 holds [2, 3, 4, 5]: token 1 has left it.
    let live: Vec<f32> = s.apply(&logits).unwrap().iter().map(|c| c.logit).collect();
    assert_eq!(live, [1.0, 1.0, 0.25, 0.25, 0.25, 0.25, 1.0, 1.0]);
    s.reset();
    let live: Vec<f32> = s.apply(&logits).unwrap().iter().map(|c| c.logit).collect();
    assert_eq!(live, [1.0; 8]);
}

/// Logits that stress the shortcuts' order: many ties (a tenth of a unit apart), `-0.0`
/// beside `0.0`, NaN and `-inf`, and a few large ones.
fn tied_logits(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Pcg64::from_seed(seed);
    (0..n)
        .map(|i| {
            let u = rng.next_f64();
            match i % 97 {
                3 => f32::NAN,
                5 => f32::NEG_INFINITY,
                7 => -0.0,
                11 => 0.0,
                _ => ((u * 80.0).round() / 10.0 - 4.0) as f32,
            }
        })
        .collect()
}

/// The masks a grammar may hand the sampler: none, random, a short one (tokens past its
/// end are refused), one that leaves fewer tokens than top-k keeps, and none at all.
fn masks(n: usize, seed: u64) -> Vec<Option<Vec<u32>>> {
    let mut rng = Pcg64::from_seed(seed);
    let words = n.div_ceil(32);
    let random: Vec<u32> = (0..words)
        .map(|_| rng.next_f64().to_bits() as u32)
        .collect();
    let mut three = vec![0u32; words];
    for t in [2usize, 500, n - 1] {
        three[t / 32] |= 1 << (t % 32);
    }
    vec![
        None,
        Some(random.clone()),
        Some(random[..words / 3].to_vec()),
        Some(three),
        Some(vec![0; words]),
    ]
}

/// Biases as clients send them: none, bans (of the top tokens among others), lifts of
/// low tokens, and ones on tokens whose logit is NaN or infinite.
fn biases(logits: &[f32]) -> Vec<Vec<(u32, f32)>> {
    let order = ref_order(
        &logits
            .iter()
            .map(|&l| if l.is_nan() { f32::NEG_INFINITY } else { l })
            .collect::<Vec<_>>(),
    );
    let n = logits.len() as u32;
    vec![
        Vec::new(),
        vec![
            (order[0], f32::NEG_INFINITY),
            (order[1], f32::NEG_INFINITY),
            (n - 1, f32::NEG_INFINITY),
        ],
        vec![
            (0, 3.0),
            (order[n as usize / 2], 20.0),
            (order[3], -0.05),
            (n - 2, 0.1),
        ],
        vec![
            (3, 5.0),
            (5, 1.0),
            (200, f32::NEG_INFINITY),
            (500, f32::NEG_INFINITY),
            (7, 0.0),
            (11, -0.0),
        ],
    ]
}

/// The shortcuts (a greedy argmax over the logits, and a top-k chain that loads only the
/// k largest, both applying mask, bias and penalties as they scan) give exactly what the
/// full chain gives, with the logits' block keys given (as a packed output head gives
/// them) or taken from the logits. The reference takes the full path because two empty logit biases
/// (which change nothing) stand before its top-k or temperature step.
#[test]
fn the_shortcuts_equal_the_full_chain() {
    let n = 5000;
    let penalty_sets = [
        Penalties::default(),
        Penalties {
            last_n: 16,
            repeat: 1.3,
            frequency: 0.5,
            presence: -0.3,
        },
        Penalties {
            last_n: 16,
            repeat: 1.0,
            frequency: -2.0,
            presence: -2.0,
        },
    ];
    for seed in 0..5 {
        let mut logits = if seed % 2 == 0 {
            tied_logits(n, seed)
        } else {
            random_logits(n, seed)
        };
        if seed == 4 {
            // +inf, and +inf banned: a NaN after the bias (x86's negative one, which
            // total_cmp puts below -inf), kept where the full chain keeps it.
            logits[200] = f32::INFINITY;
            logits[500] = f32::INFINITY;
            logits[1234] = f32::INFINITY;
        }
        // The window: more than it holds, then the top tokens (one twice), a banned one,
        // a low one three times (which negative penalties lift to the top) and the last.
        let order = ref_order(
            &logits
                .iter()
                .map(|&l| if l.is_nan() { f32::NEG_INFINITY } else { l })
                .collect::<Vec<_>>(),
        );
        let mut block_keys = vec![0; n.div_ceil(KEY_BLOCK)];
        Ops::get().block_max_keys(&logits, &mut block_keys);
        let mut accepted: Vec<u32> = (0..14).map(|i| order[i * 7 % 40]).collect();
        accepted.extend([
            order[0],
            order[1],
            order[0],
            order[2],
            200,
            1,
            1,
            1,
            n as u32 - 1,
        ]);
        for (m, mask) in masks(n, seed + 100).into_iter().enumerate() {
            let mask = mask.as_deref();
            for (nb, bias) in biases(&logits).into_iter().enumerate() {
                for (np, &penalties) in penalty_sets.iter().enumerate() {
                    let build = |tail: &[Step], full: bool| {
                        let mut steps = Vec::new();
                        if !bias.is_empty() {
                            steps.push(Step::LogitBias(bias.clone()));
                        }
                        steps.push(Step::Penalties(penalties));
                        if full {
                            steps
                                .extend([Step::LogitBias(Vec::new()), Step::LogitBias(Vec::new())]);
                        }
                        steps.extend_from_slice(tail);
                        let mut s = Sampler::with_steps(steps, seed, n).unwrap();
                        for &t in &accepted {
                            s.accept(t).unwrap();
                        }
                        s
                    };
                    let what = format!("seed {seed}, mask {m}, bias {nb}, penalties {np}");
                    // The default chain, and top-k alone (whose survivors the later steps
                    // would otherwise thin out).
                    for top_k in [1, 2, 40, 1000, n - 1] {
                        for rest in [true, false] {
                            let mut tail = vec![Step::TopK(top_k)];
                            if rest {
                                tail.extend([
                                    Step::TopP(0.95),
                                    Step::MinP(0.05),
                                    Step::Temperature(0.8),
                                ]);
                            }
                            let (mut fast, mut full) = (build(&tail, false), build(&tail, true));
                            let what = format!("{what}, top-k {top_k}, rest {rest}");
                            let (a, b) = (
                                fast.apply_masked(&logits, mask).unwrap().to_vec(),
                                full.apply_masked(&logits, mask).unwrap().to_vec(),
                            );
                            assert_eq!(a.len(), b.len(), "{what}");
                            for (a, b) in a.iter().zip(&b) {
                                assert!(
                                    a.id == b.id && a.logit.to_bits() == b.logit.to_bits(),
                                    "{what}: {a:?} {b:?}"
                                );
                            }
                            for _ in 0..5 {
                                assert_eq!(
                                    fast.sample_masked(&logits, mask),
                                    full.sample_masked(&logits, mask),
                                    "{what}"
                                );
                            }
                            // With the keys a packed head gives: the same draws.
                            let (mut keyed, mut full) = (build(&tail, false), build(&tail, true));
                            for _ in 0..5 {
                                assert_eq!(
                                    keyed.sample_keyed(&logits, Some(&block_keys), mask),
                                    full.sample_masked(&logits, mask),
                                    "{what}, keyed"
                                );
                            }
                        }
                    }
                    // Greedy: Sampler::new's shortcut against temperature 0 in full.
                    let params = SamplerParams {
                        temperature: 0.0,
                        penalties,
                        logit_bias: bias.clone(),
                        ..SamplerParams::default()
                    };
                    let mut fast = Sampler::new(&params, n).unwrap();
                    for &t in &accepted {
                        fast.accept(t).unwrap();
                    }
                    let mut full = build(&[Step::Temperature(0.0)], true);
                    let want = full.sample_masked(&logits, mask);
                    assert_eq!(fast.sample_masked(&logits, mask), want, "greedy, {what}");
                    assert_eq!(
                        fast.sample_keyed(&logits, Some(&block_keys), mask),
                        want,
                        "greedy, {what}, keyed"
                    );
                }
            }
        }
    }
}

/// Given block keys are trusted, not recomputed: keys that place the largest logit in
/// another block lead the greedy argmax there (keys of another length are ignored).
#[test]
fn given_block_keys_are_used() {
    let n = 4 * KEY_BLOCK;
    let mut logits = vec![0.0f32; n];
    logits[10] = 5.0;
    logits[3 * KEY_BLOCK + 7] = 4.0;
    let params = SamplerParams {
        temperature: 0.0,
        ..SamplerParams::default()
    };
    let mut s = Sampler::new(&params, n).unwrap();
    let mut keys = vec![0; 4];
    Ops::get().block_max_keys(&logits, &mut keys);
    assert_eq!(s.sample_keyed(&logits, Some(&keys), None), Ok(10));
    // Keys of logits where block 0 holds nothing above 0.
    let mut other = logits.clone();
    other[10] = 0.0;
    Ops::get().block_max_keys(&other, &mut keys);
    assert_eq!(
        s.sample_keyed(&logits, Some(&keys), None),
        Ok((3 * KEY_BLOCK + 7) as u32)
    );
    assert_eq!(s.sample_keyed(&logits, Some(&keys[..3]), None), Ok(10));
}
