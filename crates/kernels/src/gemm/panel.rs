//! The activation panel: every token's quantized row rewritten for the micro-kernels.
//!
//! The values are the quantizer's (Q8_0, Q8_1 or Q8_K: ggml's activation formats), stored
//! `+ 128` as unsigned bytes (or as they are, signed, for a kernel that asks:
//! [`super::ActRows::signed`]) in the weights' [`Segments`] layout, with the scale of each
//! lane (the quantizer's block scale) and, for weight formats with mins, `scale · Σa`
//! over the lane's values. Rows are padded to whole chunks and the token count to a
//! multiple of [`NR`] with zeros (value 128, or 0 signed; scale 0), which add nothing to
//! any sum.

use super::{ActRows, QuantizedRows, Segments, KC, LANES, NR};
use crate::matmul::SharedSlice;
use crate::pool::ThreadPool;
use crate::quant::blocks::f16_le;
use crate::quant::TensorType;

/// Below this many activation values, the panel is filled by the calling thread alone.
const MIN_PARALLEL: usize = 1 << 15;

/// What the weights of a call ask of its panel.
#[derive(Clone, Copy, Default)]
pub(super) struct Form {
    /// Values per weight scale ([`super::unpack::scale_run`]): the layout's runs.
    pub(super) run: usize,
    /// The weights have mins, so each lane's `scale · Σa` is wanted.
    pub(super) has_min: bool,
    /// The values are stored signed, not `+ 128` ([`super::ActRows::signed`]).
    pub(super) signed: bool,
}

/// See the module's doc.
#[derive(Default)]
pub(super) struct Panel {
    a: Vec<u8>,
    scale: Vec<f32>,
    sum: Vec<f32>,
    /// The layout of a whole row.
    segs: Option<Segments>,
    /// The last call's form: whether `sum` was filled, and whether the values are signed.
    form: Form,
    /// Rows filled by the last call: its tokens padded to a multiple of [`NR`].
    n_rows: usize,
    /// Per thread: one row in column order and its block scales, before it is laid out.
    temps: Vec<(Vec<u8>, Vec<f32>)>,
}

impl Panel {
    pub(super) fn capacity_bytes(&self) -> usize {
        let temps: usize = self
            .temps
            .iter()
            .map(|(a, s)| a.capacity() + 4 * s.capacity())
            .sum();
        self.a.capacity() + 4 * (self.scale.capacity() + self.sum.capacity()) + temps
    }

    /// Rewrites `n_tokens` rows of `n_cols` quantized activations as `form` says.
    pub(super) fn fill(
        &mut self,
        pool: &ThreadPool,
        acts: &QuantizedRows<'_>,
        n_tokens: usize,
        n_cols: usize,
        form: Form,
    ) {
        let Form {
            run,
            has_min,
            signed,
        } = form;
        let segs = Segments::new(n_cols, run);
        let zero = if signed { 0 } else { 128 };
        let (padded, lanes) = (segs.padded(), segs.count() * LANES);
        let n_rows = n_tokens.next_multiple_of(NR);
        self.segs = Some(segs);
        self.form = form;
        self.n_rows = n_rows;
        grow(&mut self.a, n_rows * padded, 128);
        grow(&mut self.scale, n_rows * lanes, 0.0);
        grow(&mut self.sum, if has_min { n_rows * lanes } else { 0 }, 0.0);
        let row_len = (padded, lanes, if has_min { lanes } else { 0 });

        let (a, scale, sum) = (
            SharedSlice::new(&mut self.a),
            SharedSlice::new(&mut self.scale),
            SharedSlice::new(&mut self.sum),
        );
        let nth = pool.n_threads();
        if self.temps.len() < nth {
            self.temps.resize_with(nth, Default::default);
        }
        for (plain, block_scale) in &mut self.temps[..nth] {
            grow(plain, padded, 128);
            grow(block_scale, n_cols / 32, 0.0);
        }
        let fill_rows = |t0: usize, t1: usize, temp: &mut (Vec<u8>, Vec<f32>)| {
            for t in t0..t1 {
                // SAFETY: each token's pieces are written by the one part that owns the
                // token (parts own disjoint token ranges).
                let (a, scale, sum) = unsafe {
                    (
                        a.piece(t * row_len.0, row_len.0),
                        scale.piece(t * row_len.1, row_len.1),
                        sum.piece(t * row_len.2, row_len.2),
                    )
                };
                if t < n_tokens {
                    let q = &acts.bytes[t * acts.stride..];
                    convert(acts.ty, q, n_cols, segs, zero, temp, a, scale, sum);
                } else {
                    a.fill(zero);
                    scale.fill(0.0);
                    sum.fill(0.0);
                }
            }
        };
        if n_tokens * n_cols >= MIN_PARALLEL {
            pool.run_with(&mut self.temps[..nth], &|ith, nth, temp| {
                fill_rows(n_rows * ith / nth, n_rows * (ith + 1) / nth, temp)
            });
        } else {
            fill_rows(0, n_rows, &mut self.temps[0]);
        }
    }

    /// Every token's values from column `k0` (a multiple of [`KC`]) on, as far as the
    /// column block's layout `block` reaches.
    pub(super) fn rows(&self, k0: usize, block: Segments) -> ActRows<'_> {
        let segs = self.segs.expect("a panel is read after it is filled");
        let (padded, lanes) = (segs.padded(), segs.count() * LANES);
        debug_assert!(k0.is_multiple_of(KC));
        // Column blocks start on group boundaries (KC is a multiple of every group).
        let lane0 = k0 / block.full_len() * LANES;
        ActRows {
            a: &self.a[k0..self.n_rows * padded],
            signed: self.form.signed,
            a_stride: padded,
            scale: &self.scale[lane0..self.n_rows * lanes],
            sum: if self.form.has_min {
                &self.sum[lane0..self.n_rows * lanes]
            } else {
                &[][..]
            },
            lane_stride: lanes,
            n_tokens: self.n_rows,
        }
    }
}

fn grow<T: Copy>(v: &mut Vec<T>, len: usize, value: T) {
    if v.len() < len {
        v.resize(len, value);
    }
}

/// One quantized row (`ty`: Q8_0, Q8_1 or Q8_K, `n_cols` values) into a panel row, the
/// values `+ 128` when `zero` (the stored zero) is 128, as they are when it is 0.
#[allow(clippy::too_many_arguments)] // one row's inputs, temporaries and outputs
fn convert(
    ty: TensorType,
    q: &[u8],
    n_cols: usize,
    segs: Segments,
    zero: u8,
    (plain, block_scale): &mut (Vec<u8>, Vec<f32>),
    a: &mut [u8],
    scale: &mut [f32],
    sum: &mut [f32],
) {
    // (bytes per block, values per block, offset of the values, the block's scale)
    let (block_bytes, block_len, qs_at): (usize, usize, usize) = match ty {
        TensorType::Q8_0 => (34, 32, 2),
        TensorType::Q8_1 => (36, 32, 4),
        TensorType::Q8_K => (292, 256, 4),
        _ => unreachable!("activation format {ty}"),
    };
    scale.fill(0.0);
    // Integer sums first (exact in f32: at most 32 values of ±128), scaled at the end.
    sum.fill(0.0);
    let n = n_cols;
    for (b, k0) in (0..n).step_by(block_len).enumerate() {
        let block = &q[b * block_bytes..][..block_bytes];
        let d = if ty == TensorType::Q8_K {
            f32::from_le_bytes([block[0], block[1], block[2], block[3]])
        } else {
            f16_le([block[0], block[1]])
        };
        // The values as stored, in column order for now.
        for (dst, &src) in plain[k0..k0 + block_len].iter_mut().zip(&block[qs_at..]) {
            *dst = src ^ zero; // a + 128 is a ^ 0x80
        }
        block_scale[k0 / block_len] = d;
    }
    // Whole groups of 16 runs of 32 (one lane per run) take the weights' transpose where
    // the CPU has AVX2; the rest, or everything, the generic layout.
    let done = if segs.run == 32 {
        lay_out_groups(&plain[..n], segs.n_full, zero, a, sum)
    } else {
        0
    };
    let lanes_done = done / segs.run;
    for (lane, scale) in scale[..lanes_done].iter_mut().enumerate() {
        *scale = block_scale[lane * segs.run / block_len];
    }
    let rest = &mut a[done..];
    rest.fill(zero);
    Segments::new(n - done, segs.run).lay_out(&plain[done..n], rest, |lane, k, q| {
        scale[lanes_done + lane] = block_scale[(done + k) / block_len];
        if let Some(s) = sum.get_mut(lanes_done + lane) {
            *s = q.iter().map(|&v| (v ^ zero) as i8 as i32).sum::<i32>() as f32;
        }
    });
    for (s, &d) in sum.iter_mut().zip(scale.iter()) {
        *s *= d;
    }
}

/// Lays out the first `n_groups` groups of 16 runs of 32 of `plain` into `a` (and their
/// lanes' sums into `sum`, unless empty) where the CPU has AVX2; returns the values done
/// (0 elsewhere).
fn lay_out_groups(plain: &[u8], n_groups: usize, zero: u8, a: &mut [u8], sum: &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected; the function indexes every slice with bounds checks.
        unsafe { super::unpack_avx2::panel_groups(plain, n_groups, zero, a, sum) };
        return n_groups * 512;
    }
    let _ = (plain, n_groups, zero, a, sum);
    0
}
