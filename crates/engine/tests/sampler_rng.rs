//! The sampler's generator against NumPy's PCG64 for the same states: the values below
//! are printed by `sampler_rng_vectors.py` (next to this file), from `numpy.random.PCG64`.
//! If one of these fails, every seeded sample Hearth ever produced changes: that is a
//! breaking change, not a test to update.

use hearth_engine::sampler::Pcg64;

const DEFAULT_INC: u128 = 0x5851_f42d_4c95_7f2d_1405_7b7e_f767_814f;

fn check(mut a: Pcg64, mut b: Pcg64, raw: [u64; 6], f64s: [f64; 4]) {
    for want in raw {
        assert_eq!(a.next_u64(), want);
    }
    for want in f64s {
        assert_eq!(b.next_f64(), want);
    }
}

#[test]
fn raw_state_matches_numpy() {
    let g = Pcg64::from_raw(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, 0x1d);
    check(
        g,
        g,
        [
            0xb6a2b67770105853,
            0x7ac6181dee1974c1,
            0x9cf667bf12fcb254,
            0xc45ee602c5209fc3,
            0x0d5a63f441f29740,
            0x1415dd838241c443,
        ],
        [
            0.7134202996822422,
            0.4795851777144884,
            0.6131348458757084,
            0.7670730358851209,
        ],
    );
}

#[test]
fn seeding_matches_pcg_srandom() {
    let cases: [(u64, u128, [u64; 6], [f64; 4]); 3] = [
        (
            0,
            0x4871bec9994273f8ac1f8a1c3883459a,
            [
                0x01070196e695f8f1,
                0x703ec840c59f4493,
                0xe54954914b3a44fa,
                0x96130ff204b9285e,
                0x7d9fdef535ceb21a,
                0x666feed42e1219a0,
            ],
            [
                0.004013156262395401,
                0.4384579809317275,
                0.895650182220586,
                0.5862283674111707,
            ],
        ),
        (
            42,
            0x1658a1a0cfcdd0ebc016309e7023acec,
            [
                0x287472e87ff5705a,
                0xbbd190b04ed0b545,
                0xb6cee3580db14880,
                0xbf5f7d7e4c3d1864,
                0x734eedbe7e50bbc5,
                0xa5b6b5f867691c77,
            ],
            [
                0.15802686859384152,
                0.7336664610327854,
                0.7140943613027889,
                0.7475508149475342,
            ],
        ),
        (
            u64::MAX,
            0x6896b12919490c996899aab798b64f55,
            [
                0x3b17d015242767f3,
                0x4180161fdb39123e,
                0xd58a3e399c161fa3,
                0x4d591ceb3fb24dce,
                0xc95c92c4dcfae7c7,
                0xeb906ebe0dc66abd,
            ],
            [
                0.230832104836876,
                0.2558606937193171,
                0.8341406717919074,
                0.302141005929749,
            ],
        ),
    ];
    for (seed, state, raw, f64s) in cases {
        let seeded = Pcg64::from_seed(seed);
        assert_eq!(seeded, Pcg64::from_raw(state, DEFAULT_INC), "seed {seed}");
        check(seeded, seeded, raw, f64s);
    }
}
