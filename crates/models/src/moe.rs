//! Mixture-of-experts feed-forward layers, shared by `deepseek2` and `qwen3moe`.
//!
//! As llama.cpp's `build_moe_ffn` (`src/llama-graph.cpp`):
//! 1. the router (`ffn_gate_inp`) gives every token one logit per routed expert;
//! 2. the gating function turns them into probabilities: softmax over all experts
//!    (Qwen3-MoE, DeepSeek-V2) or an element-wise sigmoid (DeepSeek-V3/R1)
//!    (`expert_gating_func`);
//! 3. DeepSeek-V3's per-expert bias `exp_probs_b` is added for the *selection* only; the
//!    weights stay the unbiased probabilities;
//! 4. with expert groups (`expert_group_count` > 1), each group is scored by the sum of its
//!    two best selection values and only the best `expert_group_used_count` groups stay
//!    eligible (DeepSeek-V3's group-limited routing);
//! 5. the `expert_used_count` best eligible experts are chosen; their weights are
//!    optionally renormalised to sum to 1 (`expert_weights_norm`, the sum clamped below at
//!    f16's smallest normal, as llama.cpp does) and scaled (`expert_weights_scale`);
//! 6. each chosen expert is a SwiGLU network (`ffn_gate_exps`, `ffn_up_exps` or the fused
//!    `ffn_gate_up_exps` with the gate rows first, `ffn_down_exps`), and the token's output
//!    is the weighted sum of its experts' outputs.
//!
//! The expert tensors are 3-D (`[n_embd, n_ff_exp, n_expert]`); each expert's slice is a
//! matrix of its own, borrowed from the file. A pass over several tokens groups them by
//! expert, so that each expert's weights are read once and multiplied as one matrix product
//! over all of its tokens (a GEMM for a prompt); a single decoding token reads only the
//! weights of its chosen experts.

use hearth_kernels::matmul::{matvec_batch, GemmTokens, MatmulScratch, WeightMatrix, MAX_BATCH};
use hearth_kernels::ops::Ops;
use hearth_kernels::pool::ThreadPool;

use crate::blocks::{self, Ffn, Gate};
use crate::error::ModelError;
use crate::hparams::{HParams, Keys};
use crate::weights::{Linear, Weights};

/// How router logits become expert probabilities (`expert_gating_func`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gating {
    /// 1: softmax over all routed experts.
    Softmax,
    /// 2: `sigmoid(logit)` per expert.
    Sigmoid,
}

/// DeepSeek-V3's group-limited routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Groups {
    /// `expert_group_count`: groups of consecutive experts, all the same size.
    pub(crate) n_group: usize,
    /// `expert_group_used_count`: groups a token may take experts from.
    pub(crate) n_group_used: usize,
}

/// How a token's experts are chosen and weighted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Routing {
    pub(crate) n_expert: usize,
    pub(crate) n_used: usize,
    pub(crate) gating: Gating,
    pub(crate) groups: Option<Groups>,
    /// `expert_weights_norm`: divide the chosen weights by their sum.
    pub(crate) norm: bool,
    /// `expert_weights_scale`: multiply the chosen weights (1 when absent or 0, as
    /// llama.cpp treats both).
    pub(crate) scale: f32,
}

/// llama.cpp's floor for the sum of the weights it divides by: f16's smallest normal.
const MIN_WEIGHT_SUM: f32 = 6.103_515_6e-5;

impl Routing {
    /// Reads the routing keys. `default_gating` applies when `expert_gating_func` is
    /// absent (llama.cpp: softmax for DeepSeek-V2 files, which predate the key);
    /// `default_norm` when `expert_weights_norm` is (Qwen3-MoE always normalises).
    pub(crate) fn read(
        k: &Keys<'_>,
        hp: &HParams,
        default_gating: Gating,
        default_norm: bool,
    ) -> Result<Routing, ModelError> {
        let (n_expert, n_used) = (hp.n_expert, hp.n_expert_used);
        let gating = match k.opt_count("expert_gating_func", 0, u64::MAX)? {
            None | Some(0) => default_gating,
            Some(1) => Gating::Softmax,
            Some(2) => Gating::Sigmoid,
            Some(other) => {
                return Err(k.bad(
                    "expert_gating_func",
                    format!("gating function {other} is not softmax (1) or sigmoid (2)"),
                ))
            }
        };
        let n_group = k
            .opt_count("expert_group_count", 0, n_expert as u64)?
            .unwrap_or(0);
        let groups = if n_group > 1 {
            if n_group > MAX_GROUPS {
                return Err(k.bad(
                    "expert_group_count",
                    format!("{n_group} groups is more than {MAX_GROUPS}"),
                ));
            }
            let n_group_used = k.count("expert_group_used_count", 1, n_group as u64)?;
            if !n_expert.is_multiple_of(n_group) || n_expert / n_group < 2 {
                return Err(k.bad(
                    "expert_group_count",
                    format!(
                        "{n_group} groups do not split {n_expert} experts into equal groups \
                         of at least 2"
                    ),
                ));
            }
            if n_used > n_group_used * (n_expert / n_group) {
                return Err(k.bad(
                    "expert_used_count",
                    format!(
                        "{n_used} experts do not fit in {n_group_used} groups of {}",
                        n_expert / n_group
                    ),
                ));
            }
            Some(Groups {
                n_group,
                n_group_used,
            })
        } else {
            None
        };
        let norm =
            k.md.get_opt::<bool>(&k.key("expert_weights_norm"))?
                .unwrap_or(default_norm);
        let scale = match k.opt_float("expert_weights_scale")? {
            None => 1.0,
            Some(0.0) => 1.0,
            Some(s) if s.is_finite() && s > 0.0 => s,
            Some(s) => {
                return Err(k.bad(
                    "expert_weights_scale",
                    format!("{s} is not a positive number"),
                ))
            }
        };
        Ok(Routing {
            n_expert,
            n_used,
            gating,
            groups,
            norm,
            scale,
        })
    }

    /// Chooses one token's experts from its router logits (`[n_expert]`, turned into
    /// probabilities in place): writes `(expert, weight)` pairs to `chosen`
    /// (`[n_used]`), best first. `bias` is `exp_probs_b`; `select` is `[n_expert]`
    /// scratch.
    pub(crate) fn route(
        &self,
        ops: &Ops,
        logits: &mut [f32],
        bias: Option<&[f32]>,
        select: &mut [f32],
        chosen: &mut [(u32, f32)],
    ) {
        let probs = logits;
        match self.gating {
            Gating::Softmax => ops.softmax(probs, 1.0, None),
            Gating::Sigmoid => {
                for p in probs.iter_mut() {
                    *p = 1.0 / (1.0 + (-*p).exp());
                }
            }
        }
        select.copy_from_slice(probs);
        if let Some(b) = bias {
            blocks::add(select, b);
        }
        if let Some(g) = self.groups {
            mask_groups(select, g);
        }
        for slot in chosen.iter_mut() {
            // Best remaining expert; the first of equals, as a stable sort would give.
            let (e, _) = select
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (e, &s)| {
                    if s > best.1 {
                        (e, s)
                    } else {
                        best
                    }
                });
            select[e] = f32::NEG_INFINITY;
            *slot = (e as u32, probs[e]);
        }
        if self.norm {
            let sum: f32 = chosen.iter().map(|c| c.1).sum();
            let sum = sum.max(MIN_WEIGHT_SUM);
            for c in chosen.iter_mut() {
                c.1 /= sum;
            }
        }
        if self.scale != 1.0 {
            for c in chosen.iter_mut() {
                c.1 *= self.scale;
            }
        }
    }
}

/// Sets the selection values of every expert outside the `n_group_used` best groups to
/// -inf; a group's score is the sum of its two best values.
fn mask_groups(select: &mut [f32], g: Groups) {
    let per_group = select.len() / g.n_group;
    // At most 2^16 experts, but groups are few (8 in DeepSeek-V3): a small fixed array.
    let mut scores = [f32::NEG_INFINITY; MAX_GROUPS];
    for (score, group) in scores.iter_mut().zip(select.chunks_exact(per_group)) {
        let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for &s in group {
            if s > a {
                (a, b) = (s, a);
            } else if s > b {
                b = s;
            }
        }
        *score = a + b;
    }
    let mut keep = [false; MAX_GROUPS];
    for _ in 0..g.n_group_used {
        let mut best = None;
        for (i, &s) in scores[..g.n_group].iter().enumerate() {
            if !keep[i] && best.is_none_or(|(_, bs)| s > bs) {
                best = Some((i, s));
            }
        }
        if let Some((i, _)) = best {
            keep[i] = true;
        }
    }
    for (group, &kept) in select.chunks_exact_mut(per_group).zip(&keep) {
        if !kept {
            group.fill(f32::NEG_INFINITY);
        }
    }
}

/// Most expert groups [`Routing`] handles (a file with more is refused at load).
pub(crate) const MAX_GROUPS: usize = 64;

/// One routed expert's SwiGLU network, each matrix a slice of the layer's 3-D tensor.
#[derive(Debug, Clone, Copy)]
struct Expert<'a> {
    /// `[n_ff_exp, n_embd]`
    gate: WeightMatrix<'a>,
    /// `[n_ff_exp, n_embd]`
    up: WeightMatrix<'a>,
    /// `[n_embd, n_ff_exp]`
    down: WeightMatrix<'a>,
}

/// A mixture-of-experts feed-forward layer: router, routed experts and (DeepSeek) shared
/// experts.
pub(crate) struct Moe<'a> {
    /// `[n_expert, n_embd]`
    gate_inp: WeightMatrix<'a>,
    /// `[n_expert]`: DeepSeek-V3's selection bias (`exp_probs_b.bias`).
    probs_b: Option<Vec<f32>>,
    experts: Vec<Expert<'a>>,
    /// DeepSeek's always-on shared experts (`ffn_*_shexp`), one SwiGLU network of
    /// `n_ff_exp · expert_shared_count` rows.
    shared: Option<[Linear<'a>; 3]>,
    routing: Routing,
}

impl<'a> Moe<'a> {
    /// Loads layer `il`'s router and experts (each `n_ff_exp` wide), and the shared
    /// experts when `n_ff_shexp` is given.
    pub(crate) fn load(
        w: &mut Weights<'a>,
        il: usize,
        n_embd: usize,
        n_ff_exp: usize,
        n_ff_shexp: Option<usize>,
        routing: Routing,
    ) -> Result<Moe<'a>, ModelError> {
        let p = |name: &str| format!("blk.{il}.{name}");
        let n_expert = routing.n_expert;
        let gate_inp = w.matrix(&p("ffn_gate_inp.weight"), n_embd, n_expert)?;
        let probs_b = w.vector_opt(&p("exp_probs_b.bias"), n_expert)?;
        let down = w.experts(&p("ffn_down_exps.weight"), n_ff_exp, n_embd, n_expert)?;
        let gate_up = match w.experts_opt(
            &p("ffn_gate_up_exps.weight"),
            n_embd,
            2 * n_ff_exp,
            n_expert,
        )? {
            Some(fused) => fused
                .iter()
                .map(|m| split_rows(m, n_ff_exp))
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                let gate = w.experts(&p("ffn_gate_exps.weight"), n_embd, n_ff_exp, n_expert)?;
                let up = w.experts(&p("ffn_up_exps.weight"), n_embd, n_ff_exp, n_expert)?;
                gate.into_iter().zip(up).collect()
            }
        };
        let experts = gate_up
            .into_iter()
            .zip(down)
            .map(|((gate, up), down)| Expert { gate, up, down })
            .collect();
        let shared = match n_ff_shexp {
            Some(n) => Some([
                w.linear(&p("ffn_gate_shexp"), n_embd, n, false)?,
                w.linear(&p("ffn_up_shexp"), n_embd, n, false)?,
                w.linear(&p("ffn_down_shexp"), n, n_embd, false)?,
            ]),
            None => None,
        };
        Ok(Moe {
            gate_inp,
            probs_b,
            experts,
            shared,
            routing,
        })
    }

    /// In place: `x = Σ_e w_e · expert_e(x) (+ shared(x))` for every token of `x`
    /// (`[n, n_embd]`). `g` and `u` are `[n, n_ff]` scratch of at least the experts' and
    /// the shared experts' width.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &self,
        pool: &ThreadPool,
        ops: &Ops,
        x: &mut [f32],
        g: &mut [f32],
        u: &mut [f32],
        s: &mut MoeScratch,
        mm: &mut MatmulScratch,
    ) -> Result<(), ModelError> {
        let r = &self.routing;
        let n_embd = self.gate_inp.n_cols();
        let n = x.len() / n_embd;
        let n_ff = self.experts[0].gate.n_rows();
        let n_products = 2 * (r.n_used + usize::from(self.shared.is_some()));

        // Router logits and each token's chosen experts.
        let logits = &mut s.logits[..n * r.n_expert]; // [n, n_expert]
        blocks::linear(pool, &Linear::new(self.gate_inp, None), x, logits, mm)?;
        let chosen = &mut s.chosen[..n * r.n_used]; // [n, n_used]
        for (l, c) in logits
            .chunks_exact_mut(r.n_expert)
            .zip(chosen.chunks_exact_mut(r.n_used))
        {
            r.route(ops, l, self.probs_b.as_deref(), &mut s.select, c);
        }

        // One decoding token (not a lone prompt token, which must take the GEMM like any
        // other, see `GemmTokens`): every chosen expert's products in two dispatches.
        if n == 1 && mm.gemm_tokens != GemmTokens::From(0) && n_products <= MAX_BATCH {
            return self.decode_one(pool, ops, x, s, mm);
        }

        // Tokens grouped by expert, in token order within each (a counting sort).
        s.start.fill(0);
        for &(e, _) in chosen.iter() {
            s.start[e as usize + 1] += 1;
        }
        for e in 0..r.n_expert {
            s.start[e + 1] += s.start[e];
        }
        s.fill.copy_from_slice(&s.start[..r.n_expert]);
        for (i, &(e, wgt)) in chosen.iter().enumerate() {
            let slot = &mut s.fill[e as usize];
            s.order[*slot] = ((i / r.n_used) as u32, wgt);
            *slot += 1;
        }

        // Which gathered tokens may take the GEMM: those at or after the batch's
        // boundary (see `GemmTokens`), so a token's result does not depend on its
        // neighbours.
        let by_token = mm.gemm_tokens;
        let out = &mut s.out[..n * n_embd]; // [n, n_embd]
        out.fill(0.0);
        let mut result = Ok(());
        for (e, ex) in self.experts.iter().enumerate() {
            let toks = &s.order[s.start[e]..s.start[e + 1]];
            let m = toks.len();
            if m == 0 {
                continue;
            }
            let xs = &mut s.xs[..m * n_embd]; // [m, n_embd]
            for (&(t, _), row) in toks.iter().zip(xs.chunks_exact_mut(n_embd)) {
                row.copy_from_slice(&x[t as usize * n_embd..][..n_embd]);
            }
            if let GemmTokens::From(k) = by_token {
                mm.gemm_tokens = GemmTokens::From(toks.partition_point(|&(t, _)| (t as usize) < k));
            }
            let (gm, um) = (&mut g[..m * n_ff], &mut u[..m * n_ff]);
            // In place: xs = down(silu(gate(xs)) · up(xs)), the dense network's code.
            let lin = |w| Linear::new(w, None);
            let (gate, up, down) = (lin(ex.gate), lin(ex.up), lin(ex.down));
            let ffn = Ffn {
                gate: &gate,
                up: &up,
                down: &down,
                act: Gate::Silu,
            };
            result = blocks::ffn(pool, ops, &ffn, xs, gm, um, mm);
            if result.is_err() {
                break;
            }
            for (&(t, wgt), y) in toks.iter().zip(xs.chunks_exact(n_embd)) {
                for (o, &y) in out[t as usize * n_embd..][..n_embd].iter_mut().zip(y) {
                    *o += wgt * y;
                }
            }
        }
        mm.gemm_tokens = by_token;
        result?;

        if let Some([gate, up, down]) = &self.shared {
            let ffn = Ffn {
                gate,
                up,
                down,
                act: Gate::Silu,
            };
            let n_sh = gate.w.n_rows();
            blocks::ffn(
                pool,
                ops,
                &ffn,
                x,
                &mut g[..n * n_sh],
                &mut u[..n * n_sh],
                mm,
            )?; // ffn_shexp
            blocks::add(x, out);
        } else {
            x.copy_from_slice(out);
        }
        Ok(())
    }
}

/// A block's feed-forward network in a model with experts: dense SwiGLU (DeepSeek's
/// leading blocks) or mixture-of-experts.
pub(crate) enum LayerFfn<'a> {
    /// `ffn_gate`, `ffn_up` (`[n_ff, n_embd]`), `ffn_down` (`[n_embd, n_ff]`).
    Dense([Linear<'a>; 3]),
    Moe(Moe<'a>),
}

impl<'a> LayerFfn<'a> {
    /// The linear layers of a dense network (for packing). Not the shared experts': a
    /// decoding token multiplies them in one dispatch with the routed experts, which
    /// are slices of stacked tensors and do not pack.
    pub(crate) fn linears_mut(&mut self) -> Vec<&mut Linear<'a>> {
        match self {
            LayerFfn::Dense(l) => l.iter_mut().collect(),
            LayerFfn::Moe(_) => Vec::new(),
        }
    }
}

impl LayerFfn<'_> {
    /// In place: `x = ffn(x)` for every token of `x` (`[n, n_embd]`); `g` and `u` are
    /// `[n, n_ff]` scratch of at least the network's width.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &self,
        pool: &ThreadPool,
        ops: &Ops,
        x: &mut [f32],
        g: &mut [f32],
        u: &mut [f32],
        s: &mut MoeScratch,
        mm: &mut MatmulScratch,
    ) -> Result<(), ModelError> {
        match self {
            LayerFfn::Dense([gate, up, down]) => {
                let ffn = Ffn {
                    gate,
                    up,
                    down,
                    act: Gate::Silu,
                };
                let n = x.len() / gate.w.n_cols();
                let n_ff = gate.w.n_rows();
                blocks::ffn(
                    pool,
                    ops,
                    &ffn,
                    x,
                    &mut g[..n * n_ff],
                    &mut u[..n * n_ff],
                    mm,
                )
            }
            LayerFfn::Moe(moe) => moe.forward(pool, ops, x, g, u, s, mm),
        }
    }
}

impl Moe<'_> {
    /// [`Moe::forward`] of one token whose experts are chosen (`s.chosen[..n_used]`):
    /// the gate and up products of every chosen expert and of the shared experts in one
    /// dispatch, their down products in another (`matvec_batch`), instead of two
    /// dispatches per expert.
    fn decode_one(
        &self,
        pool: &ThreadPool,
        ops: &Ops,
        x: &mut [f32],
        s: &mut MoeScratch,
        mm: &mut MatmulScratch,
    ) -> Result<(), ModelError> {
        let n_embd = x.len();
        let n_ff = self.experts[0].gate.n_rows();
        let chosen = &s.chosen[..self.routing.n_used];
        let shared = self.shared.as_ref();
        let n_sh = shared.map_or(0, |[g, _, _]| g.w.n_rows());
        let dummy = self.gate_inp;
        let mut products = [(&dummy, &x[..]); MAX_BATCH];
        let mut k = 0;
        for &(e, _) in chosen {
            let ex = &self.experts[e as usize];
            products[k] = (&ex.gate, x);
            products[k + 1] = (&ex.up, x);
            k += 2;
        }
        if let Some([gate, up, _]) = shared {
            products[k] = (&gate.w, x);
            products[k + 1] = (&up.w, x);
            k += 2;
        }
        // [gate_0 | up_0 | gate_1 | up_1 | ... | gate_shared | up_shared]
        let gu = &mut s.gate_up[..2 * (chosen.len() * n_ff + n_sh)];
        matvec_batch(pool, &products[..k], gu, mm)?;
        for pair in gu[..2 * chosen.len() * n_ff].chunks_exact_mut(2 * n_ff) {
            let (g, u) = pair.split_at_mut(n_ff);
            ops.silu_mul(g, u);
        }
        let (g_sh, u_sh) = gu[2 * chosen.len() * n_ff..].split_at_mut(n_sh);
        ops.silu_mul(g_sh, u_sh);

        let gu = &*gu;
        let mut k = 0;
        for (i, &(e, _)) in chosen.iter().enumerate() {
            products[k] = (&self.experts[e as usize].down, &gu[2 * i * n_ff..][..n_ff]);
            k += 1;
        }
        if let Some([_, _, down]) = shared {
            products[k] = (&down.w, &gu[2 * chosen.len() * n_ff..][..n_sh]);
            k += 1;
        }
        let ys = &mut s.ys[..k * n_embd]; // [n_used (+ 1), n_embd]
        matvec_batch(pool, &products[..k], ys, mm)?;
        // Summed as `forward` sums a batch (routed experts by ascending index, then added
        // to the shared experts' output), so that a token's result does not depend on
        // whether it decodes alone.
        let (routed, sh) = ys.split_at(chosen.len() * n_embd);
        let out = &mut s.out[..n_embd];
        out.fill(0.0);
        for e in 0..self.experts.len() as u32 {
            for (&(_, wgt), y) in chosen
                .iter()
                .zip(routed.chunks_exact(n_embd))
                .filter(|((c, _), _)| *c == e)
            {
                for (o, &y) in out.iter_mut().zip(y) {
                    *o += wgt * y;
                }
            }
        }
        match shared {
            Some([_, _, down]) => {
                x.copy_from_slice(sh);
                if let Some(b) = &down.b {
                    blocks::add(x, b);
                }
                blocks::add(x, out);
            }
            None => x.copy_from_slice(out),
        }
        Ok(())
    }
}

/// The gate (first `n_ff` rows) and up (the rest) halves of a fused expert matrix.
fn split_rows<'a>(
    m: &WeightMatrix<'a>,
    n_ff: usize,
) -> Result<(WeightMatrix<'a>, WeightMatrix<'a>), ModelError> {
    let (gate, up) = m.data().split_at(n_ff * m.row_bytes());
    Ok((
        WeightMatrix::new(m.ty(), n_ff, m.n_cols(), gate)?,
        WeightMatrix::new(m.ty(), n_ff, m.n_cols(), up)?,
    ))
}

/// The working memory of [`Moe::forward`] for up to `n_ubatch` tokens.
#[derive(Debug, Default)]
pub(crate) struct MoeScratch {
    /// `[n_ubatch, n_expert]`: router logits, then probabilities.
    logits: Vec<f32>,
    /// `[n_expert]`: one token's selection values.
    select: Vec<f32>,
    /// `[n_ubatch, n_used]`: each token's `(expert, weight)`.
    chosen: Vec<(u32, f32)>,
    /// `[n_expert + 1]`: where each expert's tokens start in `order`.
    start: Vec<usize>,
    /// `[n_expert]`: the next free slot of each expert's run while sorting.
    fill: Vec<usize>,
    /// `[n_ubatch · n_used]`: `(token, weight)` grouped by expert.
    order: Vec<(u32, f32)>,
    /// `[n_ubatch, n_embd]`: one expert's tokens, gathered, then its outputs.
    xs: Vec<f32>,
    /// `[n_used + 1, n_embd]`: decoding, every chosen expert's outputs.
    ys: Vec<f32>,
    /// `[2 · (n_used + 1), n_ff]`: decoding, every chosen expert's gate and up outputs.
    gate_up: Vec<f32>,
    /// `[n_ubatch, n_embd]`: the weighted sum of the routed experts' outputs.
    out: Vec<f32>,
}

impl MoeScratch {
    /// Buffers for slices of up to `n_ubatch` tokens; empty for a dense model
    /// (`n_expert == 0`).
    pub(crate) fn new(
        n_ubatch: usize,
        n_embd: usize,
        n_ff: usize,
        n_expert: usize,
        n_used: usize,
    ) -> MoeScratch {
        if n_expert == 0 {
            return MoeScratch::default();
        }
        MoeScratch {
            logits: vec![0.0; n_ubatch * n_expert],
            select: vec![0.0; n_expert],
            chosen: vec![(0, 0.0); n_ubatch * n_used],
            start: vec![0; n_expert + 1],
            fill: vec![0; n_expert],
            order: vec![(0, 0.0); n_ubatch * n_used],
            xs: vec![0.0; n_ubatch * n_embd],
            ys: vec![0.0; (n_used + 1) * n_embd],
            gate_up: vec![0.0; 2 * (n_used + 1) * n_ff],
            out: vec![0.0; n_ubatch * n_embd],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(gating: Gating, groups: Option<Groups>, norm: bool, scale: f32) -> Routing {
        Routing {
            n_expert: 8,
            n_used: 3,
            gating,
            groups,
            norm,
            scale,
        }
    }

    /// Softmax, top 3, no renormalisation: the weights are the softmax probabilities.
    #[test]
    fn softmax_top_k_keeps_probabilities() {
        let r = routing(Gating::Softmax, None, false, 1.0);
        let mut logits = [0.0, 3.0, 1.0, 2.0, -1.0, 0.5, 2.5, 0.0];
        let z: f32 = logits.iter().map(|l: &f32| l.exp()).sum();
        let mut chosen = [(0, 0.0); 3];
        r.route(Ops::get(), &mut logits, None, &mut [0.0; 8], &mut chosen);
        let ids: Vec<u32> = chosen.iter().map(|c| c.0).collect();
        assert_eq!(ids, [1, 6, 3]);
        for (c, l) in chosen.iter().zip([3.0f32, 2.5, 2.0]) {
            assert!((c.1 - l.exp() / z).abs() < 1e-6, "{chosen:?}");
        }
    }

    /// Sigmoid with a selection bias, two of four groups, renormalised and scaled: the
    /// bias moves the choice but not the weights, and experts of dropped groups are
    /// never chosen however good.
    #[test]
    fn biased_group_limited_routing() {
        let r = routing(
            Gating::Sigmoid,
            Some(Groups {
                n_group: 4,
                n_group_used: 2,
            }),
            true,
            2.5,
        );
        // Groups {0,1} {2,3} {4,5} {6,7}.
        let mut logits = [0.0, 0.0, 4.0, -4.0, 1.0, 1.0, 0.5, 0.5];
        let bias = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0];
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        let mut chosen = [(0, 0.0); 3];
        r.route(
            Ops::get(),
            &mut logits,
            Some(&bias),
            &mut [0.0; 8],
            &mut chosen,
        );
        // Group scores (top-2 sums of sigmoid + bias): {0,1} 1.0, {2,3} 1.0,
        // {4,5} 1.46, {6,7} 3.24: groups {6,7} and {4,5} stay. Expert 2 (the best
        // probability) is in a dropped group.
        let ids: Vec<u32> = chosen.iter().map(|c| c.0).collect();
        assert_eq!(ids, [7, 4, 5]);
        let p = [sig(0.5), sig(1.0), sig(1.0)];
        let sum: f32 = p.iter().sum();
        for (c, p) in chosen.iter().zip(p) {
            assert!((c.1 - 2.5 * p / sum).abs() < 1e-6, "{chosen:?}");
        }
    }
}
