use topkit::math;
use topkit_tests::kernels_ref::erf_f64;

fn grid(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f32> {
    (0..=n).map(move |i| (lo + (hi - lo) * i as f64 / n as f64) as f32)
}

#[test]
fn measure() {
    let mut m = [0f64; 6];
    for x in grid(-87.0, 88.0, 2_000_000) {
        let r = (x as f64).exp();
        m[0] = m[0].max(((math::exp(x) as f64 - r) / r).abs());
    }
    for x in grid(-30.0, 0.0, 2_000_000) {
        m[1] = m[1].max((math::exp(x) as f64 - (x as f64).exp()).abs());
    }
    for i in 0..=2_000_000 {
        let x = 10f64.powf(-30.0 + 60.0 * i as f64 / 2e6) as f32;
        let r = (x as f64).sqrt();
        m[2] = m[2].max(((math::sqrt(x) as f64 - r) / r).abs());
    }
    for x in grid(-20.0, 20.0, 2_000_000) {
        m[3] = m[3].max((math::tanh(x) as f64 - (x as f64).tanh()).abs());
    }
    for x in grid(-8.0, 8.0, 2_000_000) {
        m[4] = m[4].max((math::erf(x) as f64 - erf_f64(x as f64)).abs());
    }
    println!(
        "exp rel {:.3e} exp abs {:.3e} sqrt rel {:.3e} tanh abs {:.3e} erf abs {:.3e}",
        m[0], m[1], m[2], m[3], m[4]
    );
    // erf reference check
    for (x, want) in [
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (2.0, 0.9953222650189527),
        (3.0, 1.0 - 2.209049699858544e-05),
        (3.5, 1.0 - 7.430983723414128e-07),
    ] {
        println!(
            "erf_f64({x}) = {:.17} want {:.17} diff {:.3e}",
            erf_f64(x),
            want,
            erf_f64(x) - want
        );
    }
}
