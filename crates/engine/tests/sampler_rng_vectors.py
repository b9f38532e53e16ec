#!/usr/bin/env python3
"""Reference outputs for Hearth's sampler generator (crates/engine/src/sampler/rng.rs).

The generator is PCG64 (XSL-RR 128/64), which NumPy ships as numpy.random.PCG64. This
script sets NumPy's generator to a raw state and prints its raw 64-bit outputs and its
doubles (`random()`), which tests/sampler_rng.rs compares against.

For Hearth's seeding (`Pcg64::from_seed`), the state is derived the way PCG's reference
`pcg_setseq_128_srandom_r` does (state = 0, step, add the seed, step), written out below
with Python integers; the outputs then come from NumPy.

Run: python3 crates/engine/tests/sampler_rng_vectors.py
"""
import numpy as np

MASK = (1 << 128) - 1
MULT = 0x2360ED051FC65DA44385DF649FCCF645
DEFAULT_INC = 0x5851F42D4C957F2D14057B7EF767814F


def numpy_pcg(state, inc):
    bg = np.random.PCG64()
    bg.state = {
        "bit_generator": "PCG64",
        "state": {"state": state, "inc": inc},
        "has_uint32": 0,
        "uinteger": 0,
    }
    return bg


def srandom(seed):
    state = 0
    state = (state * MULT + DEFAULT_INC) & MASK
    state = (state + seed) & MASK
    state = (state * MULT + DEFAULT_INC) & MASK
    return state


def show(name, state, inc):
    bg = numpy_pcg(state, inc)
    raw = [int(x) for x in bg.random_raw(6)]
    bg = numpy_pcg(state, inc)
    dbl = np.random.Generator(bg).random(4)
    print(f"// {name}: state={state:#x} inc={inc:#x}")
    print("raw: [" + ", ".join(f"{x:#018x}" for x in raw) + "]")
    print("f64: [" + ", ".join(repr(float(x)) for x in dbl) + "]")


show("raw state", 0x0123456789ABCDEF_FEDCBA9876543210, 0x1D)
for seed in [0, 42, 0xFFFFFFFFFFFFFFFF]:
    show(f"from_seed({seed:#x})", srandom(seed), DEFAULT_INC)
