//! The elementwise kernels against PyTorch autograd: fixtures written by
//! `tools/fixtures_elementwise.py` (float64 reference on float32 inputs, rounded once), N=7, C=13,
//! V=11. Forward outputs and every input/parameter gradient of `L = Σ out ⊙ dout` must agree
//! within 1e-5 relative, with a 1e-6 absolute floor for values near zero.

mod common;

use common::{assert_close, get, load};
use gpt::kernels::{embedding, gelu, layernorm, residual, softmax};

const RTOL: f32 = 1e-5;
const ATOL: f32 = 1e-6;

/// Fixture tensor data by name.
fn data(fx: &std::collections::HashMap<String, common::FixtureTensor>, name: &str) -> Vec<f32> {
    get(fx, name).data.clone()
}

#[test]
fn embedding_matches_torch_with_repeated_ids() {
    let fx = load("elementwise/embedding.safetensors");
    let table = get(&fx, "table");
    let (v, c) = (table.shape[0], table.shape[1]);
    let ids: Vec<u32> = get(&fx, "ids").data.iter().map(|&x| x as u32).collect();
    let n = ids.len();
    let mut out = vec![0.0; n * c];
    embedding::embedding_forward(&mut out, &ids, &table.data, n, c, v);
    assert_close("embedding out", &out, &data(&fx, "out"), RTOL, ATOL);
    let mut dtable = vec![0.0; v * c];
    embedding::embedding_backward(&mut dtable, &data(&fx, "dout"), &ids, n, c, v);
    assert_close(
        "embedding dtable",
        &dtable,
        &data(&fx, "dtable"),
        RTOL,
        ATOL,
    );
}

#[test]
fn layernorm_matches_torch() {
    let fx = load("elementwise/layernorm.safetensors");
    let inp = get(&fx, "inp");
    let (n, c) = (inp.shape[0], inp.shape[1]);
    let (w, b) = (data(&fx, "weight"), data(&fx, "bias"));
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    layernorm::layernorm_forward(
        &mut out, &mut mean, &mut rstd, &inp.data, &w, &b, n, c, 1e-5,
    );
    assert_close("layernorm out", &out, &data(&fx, "out"), RTOL, ATOL);
    let (mut dinp, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    let dout = data(&fx, "dout");
    layernorm::layernorm_backward(
        &mut dinp, &mut dw, &mut db, &dout, &inp.data, &w, &mean, &rstd, n, c,
    );
    assert_close("layernorm dinp", &dinp, &data(&fx, "dinp"), RTOL, ATOL);
    assert_close("layernorm dweight", &dw, &data(&fx, "dweight"), RTOL, ATOL);
    assert_close("layernorm dbias", &db, &data(&fx, "dbias"), RTOL, ATOL);
}

/// Elementwise activation fixture: forward into a fresh buffer, backward from zero.
fn check_activation(file: &str, fwd: fn(&mut [f32], &[f32]), bwd: fn(&mut [f32], &[f32], &[f32])) {
    let fx = load(file);
    let inp = data(&fx, "inp");
    let mut out = vec![0.0; inp.len()];
    fwd(&mut out, &inp);
    assert_close(&format!("{file} out"), &out, &data(&fx, "out"), RTOL, ATOL);
    let mut dinp = vec![0.0; inp.len()];
    bwd(&mut dinp, &inp, &data(&fx, "dout"));
    assert_close(
        &format!("{file} dinp"),
        &dinp,
        &data(&fx, "dinp"),
        RTOL,
        ATOL,
    );
}

#[test]
fn gelu_tanh_matches_torch() {
    check_activation(
        "elementwise/gelu.safetensors",
        gelu::gelu_forward,
        gelu::gelu_backward,
    );
    // The in-place form gives the same forward.
    let fx = load("elementwise/gelu.safetensors");
    let mut x = data(&fx, "inp");
    gelu::gelu_forward_inplace(&mut x);
    assert_close("gelu inplace", &x, &data(&fx, "out"), RTOL, ATOL);
}

#[test]
fn relu_matches_torch() {
    check_activation(
        "elementwise/relu.safetensors",
        gelu::relu_forward,
        gelu::relu_backward,
    );
}

/// Row-wise fixture whose backward takes the forward's output.
fn check_rowwise(
    file: &str,
    fwd: fn(&mut [f32], &[f32], usize, usize),
    bwd: fn(&mut [f32], &[f32], &[f32], usize, usize),
) {
    let fx = load(file);
    let inp = get(&fx, "inp");
    let (n, c) = (inp.shape[0], inp.shape[1]);
    let mut out = vec![0.0; n * c];
    fwd(&mut out, &inp.data, n, c);
    assert_close(&format!("{file} out"), &out, &data(&fx, "out"), RTOL, ATOL);
    let mut dinp = vec![0.0; n * c];
    bwd(&mut dinp, &out, &data(&fx, "dout"), n, c);
    assert_close(
        &format!("{file} dinp"),
        &dinp,
        &data(&fx, "dinp"),
        RTOL,
        ATOL,
    );
}

#[test]
fn softmax_matches_torch() {
    check_rowwise(
        "elementwise/softmax.safetensors",
        softmax::softmax_forward,
        softmax::softmax_backward,
    );
}

#[test]
fn log_softmax_matches_torch() {
    check_rowwise(
        "elementwise/log_softmax.safetensors",
        softmax::log_softmax_forward,
        softmax::log_softmax_backward,
    );
}

#[test]
fn residual_matches_torch() {
    let fx = load("elementwise/residual.safetensors");
    let (a, b) = (data(&fx, "a"), data(&fx, "b"));
    let mut out = vec![0.0; a.len()];
    residual::residual_forward(&mut out, &a, &b);
    assert_close("residual out", &out, &data(&fx, "out"), RTOL, ATOL);
    let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; a.len()]);
    residual::residual_backward(&mut da, &mut db, &data(&fx, "dout"));
    assert_close("residual da", &da, &data(&fx, "da"), RTOL, ATOL);
    assert_close("residual db", &db, &data(&fx, "db"), RTOL, ATOL);
}

#[test]
fn scale_matches_torch() {
    let fx = load("elementwise/scale.safetensors");
    let s = get(&fx, "s").data[0];
    let inp = data(&fx, "inp");
    let mut out = vec![0.0; inp.len()];
    residual::scale_forward(&mut out, &inp, s);
    assert_close("scale out", &out, &data(&fx, "out"), RTOL, ATOL);
    let mut dinp = vec![0.0; inp.len()];
    residual::scale_backward(&mut dinp, &data(&fx, "dout"), s);
    assert_close("scale dinp", &dinp, &data(&fx, "dinp"), RTOL, ATOL);
}

#[test]
fn sinusoidal_positions_match_annotated_transformer() {
    let fx = load("elementwise/sinusoidal.safetensors");
    for name in ["pe_7x13", "pe_64x16"] {
        let want = get(&fx, name);
        let (t, c) = (want.shape[0], want.shape[1]);
        let mut pe = vec![0.0; t * c];
        embedding::sinusoidal_positions(&mut pe, t, c);
        assert_close(name, &pe, &want.data, RTOL, ATOL);
    }
}

#[test]
fn linear_matches_torch_in_both_weight_layouts() {
    use gpt::kernels::matmul::{linear_backward, linear_forward, WeightLayout};
    for (file, layout) in [
        ("outin", WeightLayout::OutIn),
        ("inout", WeightLayout::InOut),
    ] {
        let fx = load(&format!("elementwise/linear_{file}.safetensors"));
        let inp = get(&fx, "inp");
        let (n, ic) = (inp.shape[0], inp.shape[1]);
        let (w, b) = (data(&fx, "weight"), data(&fx, "bias"));
        let oc = b.len();
        let mut out = vec![0.0; n * oc];
        linear_forward(&mut out, &inp.data, &w, Some(&b), n, ic, oc, layout);
        assert_close("linear out", &out, &data(&fx, "out"), RTOL, ATOL);
        let (mut dinp, mut dw, mut db) = (vec![0.0; n * ic], vec![0.0; ic * oc], vec![0.0; oc]);
        let dout = data(&fx, "dout");
        linear_backward(
            Some(&mut dinp),
            &mut dw,
            Some(&mut db),
            &dout,
            &inp.data,
            &w,
            n,
            ic,
            oc,
            layout,
        );
        assert_close("linear dinp", &dinp, &data(&fx, "dinp"), RTOL, ATOL);
        assert_close("linear dweight", &dw, &data(&fx, "dweight"), RTOL, ATOL);
        assert_close("linear dbias", &db, &data(&fx, "dbias"), RTOL, ATOL);
    }
}

#[test]
fn matmul_matches_torch_in_all_transpose_combinations() {
    use gpt::kernels::matmul::matmul;
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let name = format!(
            "{}{}",
            if ta { 't' } else { 'n' },
            if tb { 't' } else { 'n' }
        );
        let fx = load(&format!("elementwise/matmul_{name}.safetensors"));
        let (a, b) = (get(&fx, "a"), get(&fx, "b"));
        let (m, k) = if ta {
            (a.shape[1], a.shape[0])
        } else {
            (a.shape[0], a.shape[1])
        };
        let n = if tb { b.shape[0] } else { b.shape[1] };
        let mut out = vec![0.0; m * n];
        matmul(&mut out, &a.data, &b.data, m, k, n, ta, tb, false);
        assert_close(
            &format!("matmul {name} out"),
            &out,
            &data(&fx, "out"),
            RTOL,
            ATOL,
        );
        // Gradients through the same kernel: dÂ = dout·B̂ᵀ and dB̂ = Âᵀ·dout, in stored layouts.
        let dout = data(&fx, "dout");
        let mut da = vec![0.0; m * k];
        let mut db = vec![0.0; k * n];
        if ta {
            matmul(&mut da, &b.data, &dout, k, n, m, tb, true, false);
        } else {
            matmul(&mut da, &dout, &b.data, m, n, k, false, !tb, false);
        }
        if tb {
            matmul(&mut db, &dout, &a.data, n, m, k, true, ta, false);
        } else {
            matmul(&mut db, &a.data, &dout, k, m, n, !ta, false, false);
        }
        assert_close(
            &format!("matmul {name} da"),
            &da,
            &data(&fx, "da"),
            RTOL,
            ATOL,
        );
        assert_close(
            &format!("matmul {name} db"),
            &db,
            &data(&fx, "db"),
            RTOL,
            ATOL,
        );
    }
}
