//! The sampler's random numbers: PCG64 (XSL-RR 128/64), a small generator we own so that a
//! seed gives the same draws on every platform and in every Hearth version, whatever
//! `rand` or the C library do.
//!
//! The generator is the one NumPy ships as `numpy.random.PCG64` (O'Neill's
//! `pcg_setseq_128_xsl_rr_64`): a 128-bit LCG whose state is advanced *before* each output,
//! which is permuted by xor-folding the halves and a data-dependent rotation. The tests
//! compare raw outputs and doubles with NumPy's for the same state
//! (`crates/engine/tests/sampler_rng_vectors.py`).

/// The 128-bit LCG multiplier of PCG (`PCG_DEFAULT_MULTIPLIER_128`).
const MULTIPLIER: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;

/// The stream (increment) a plain seed selects: any odd constant works; this one is
/// PCG's `PCG_DEFAULT_INCREMENT_128`.
const DEFAULT_INCREMENT: u128 = 0x5851_F42D_4C95_7F2D_1405_7B7E_F767_814F;

/// A PCG64 generator. Cheap to copy; 32 bytes of state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pcg64 {
    state: u128,
    /// Always odd, so that the LCG has full period.
    increment: u128,
}

impl Pcg64 {
    /// A generator for `seed`, seeded the way PCG's `srandom_r(initstate, initseq)` does
    /// with `initstate = seed` on the default stream.
    pub fn from_seed(seed: u64) -> Pcg64 {
        let mut rng = Pcg64 {
            state: 0,
            increment: DEFAULT_INCREMENT,
        };
        rng.step();
        rng.state = rng.state.wrapping_add(u128::from(seed));
        rng.step();
        rng
    }

    /// A generator with the raw state and increment (made odd), as NumPy's
    /// `PCG64.state = {"state": {"state": s, "inc": i}}` sets them.
    pub fn from_raw(state: u128, increment: u128) -> Pcg64 {
        Pcg64 {
            state,
            increment: increment | 1,
        }
    }

    fn step(&mut self) {
        self.state = self
            .state
            .wrapping_mul(MULTIPLIER)
            .wrapping_add(self.increment);
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let hi = (self.state >> 64) as u64;
        let lo = self.state as u64;
        (hi ^ lo).rotate_right((hi >> 58) as u32)
    }

    /// A double uniform in `[0, 1)` from the top 53 bits of [`Pcg64::next_u64`], as
    /// NumPy's `random()` makes it.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }
}
