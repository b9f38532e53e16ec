//! The largest logit of each block of a vocabulary, as an integer key: how a sampler
//! passes over the blocks that cannot hold a winner (the engine's greedy argmax and its
//! top-k scan), instead of looking at each of a 262k vocabulary's tokens.
//!
//! The key orders floats as `f32::total_cmp` does (`-0.0` before `+0.0`, exactly one key
//! per bit pattern), with NaN read as `-inf`: integers compare in plain vector
//! instructions, and a search for the first token whose key equals a block's maximum
//! finds exactly the token the full order would. The scalar function here is the
//! reference; the SIMD levels compile the same integer code for wider registers
//! (`crate::x86::ops`), so every level gives the same keys bit for bit.

/// Logits per block.
pub const KEY_BLOCK: usize = 64;

/// `total_cmp`'s order as an integer: `raw_key(a) < raw_key(b)` exactly when `a` comes
/// before `b` (NaN included, at either end by its sign).
#[inline(always)]
pub fn raw_key(l: f32) -> i32 {
    let b = l.to_bits() as i32;
    b ^ (((b >> 31) as u32) >> 1) as i32
}

/// [`raw_key`] with NaN read as `-inf`: a token whose logit is not a number never wins.
#[inline(always)]
pub fn order_key(l: f32) -> i32 {
    raw_key(if l.is_nan() { f32::NEG_INFINITY } else { l })
}

/// `out[b]` = the largest [`order_key`] of `x[b·KEY_BLOCK..]` (the last block may be
/// short). Lengths are checked by [`crate::ops::Ops::block_max_keys`].
#[inline(always)]
pub fn block_max_keys(x: &[f32], out: &mut [i32]) {
    for (o, block) in out.iter_mut().zip(x.chunks(KEY_BLOCK)) {
        *o = block.iter().fold(i32::MIN, |m, &l| m.max(order_key(l)));
    }
}
