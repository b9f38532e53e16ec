//! How long one decode-shaped attention tile takes (`Ops::attn_tile`: f16 keys and
//! values, `ROWS` query rows against one KV head of 256 dimensions, Gemma 3's shape),
//! with the cache in L2 and out of cache, and how the next tile is fetched meanwhile:
//!
//! - `none`: no prefetch; the hardware's prefetchers only.
//! - `burst`: the whole next tile prefetched before each tile (`KvTile::prefetch`), as
//!   attention did before the kernels fetched it themselves.
//! - `paced`: the next tile passed to `attn_tile`, whose kernels fetch it a few lines at
//!   a time while they work (`Ahead`), as attention does now.
//!
//! Out of cache, 64 MiB of tiles (twice a large L3) are visited in a shuffled order, 16
//! tiles (a 256-token sequence) per pass, as a decode step finds a sequence's blocks in
//! the pool. The figure is ns per tile by this thread's CPU time, best of seven.
//!
//! ```text
//! cargo run --release -p hearth-kernels --example attn_speed [ROWS]
//! ```

use hearth_kernels::ops::attention::{f32_to_f16, FlashRows, KvData, KvTile, KV_TILE};
use hearth_kernels::ops::Ops;

mod common;
use common::cpu_time;

const HEAD_DIM: usize = 256;
const TILES_PER_PASS: usize = 16;

#[derive(Clone, Copy, PartialEq)]
enum Fetch {
    None,
    Burst,
    Paced,
}

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .map_or(4, |s| s.parse().expect("ROWS"));
    let ops = Ops::get();
    println!(
        "level {}, {rows} query rows, head dim {HEAD_DIM}, f16 cache",
        ops.level().name()
    );
    for (place, n_tiles) in [("in L2", TILES_PER_PASS), ("out of cache", 4096)] {
        for (name, fetch) in [
            ("none", Fetch::None),
            ("burst", Fetch::Burst),
            ("paced", Fetch::Paced),
        ] {
            let ns = time_tiles(ops, rows, n_tiles, fetch);
            println!("{place:>12} {name:>5}: {ns:6.0} ns per tile");
        }
    }
}

/// Best-of-seven CPU ns per tile over `n_tiles` tiles in a shuffled order.
fn time_tiles(ops: &Ops, rows: usize, n_tiles: usize, fetch: Fetch) -> f64 {
    let tile_len = HEAD_DIM * KV_TILE;
    let cache: Vec<u16> = (0..2 * n_tiles * tile_len)
        .map(|i| f32_to_f16(((i * 7919 % 1999) as f32 / 999.0 - 1.0) * 0.5))
        .collect();
    let tile = |b: usize| KvTile {
        k: KvData::F16(&cache[2 * b * tile_len..][..tile_len]),
        v: KvData::F16(&cache[(2 * b + 1) * tile_len..][..tile_len]),
        v_stride: HEAD_DIM,
    };
    let order = shuffled(n_tiles);
    let q: Vec<f32> = (0..rows * HEAD_DIM)
        .map(|i| (i * 31 % 97) as f32 / 48.0 - 1.0)
        .collect();
    let (mut m, mut l, mut o) = (vec![0.0; rows], vec![0.0; rows], vec![0.0; rows * HEAD_DIM]);
    let (mut s, mut alpha) = (vec![0.0; rows * KV_TILE], vec![0.0; rows]);
    let vis = [(0, KV_TILE)];
    // At least 64 Ki tiles a run, so that the small case is long enough to time.
    let passes = (65536 / n_tiles).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let start = cpu_time();
        for pass in order
            .chunks_exact(TILES_PER_PASS)
            .cycle()
            .take(passes * n_tiles / TILES_PER_PASS)
        {
            let mut st = FlashRows {
                m: &mut m,
                l: &mut l,
                o: &mut o,
                s: &mut s,
                alpha: &mut alpha,
            };
            st.reset();
            if fetch != Fetch::None {
                tile(pass[0]).prefetch();
            }
            for (j, &b) in pass.iter().enumerate() {
                let next = pass.get(j + 1).map(|&nb| tile(nb));
                match fetch {
                    Fetch::None => ops.attn_tile(&q, 0.0625, &tile(b), None, &vis, &mut st),
                    Fetch::Burst => {
                        if let Some(next) = &next {
                            next.prefetch();
                        }
                        ops.attn_tile(&q, 0.0625, &tile(b), None, &vis, &mut st);
                    }
                    Fetch::Paced => {
                        ops.attn_tile(&q, 0.0625, &tile(b), next.as_ref(), &vis, &mut st)
                    }
                }
            }
            std::hint::black_box(&st.o);
        }
        let per_tile = (cpu_time() - start).as_secs_f64() / (passes * n_tiles) as f64;
        best = best.min(per_tile);
    }
    best * 1e9
}

/// `0..n` in a fixed pseudo-random order (xorshift, Fisher–Yates).
fn shuffled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}
