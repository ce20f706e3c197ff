//! Attention, cross-entropy and AdamW kernels against PyTorch fixtures
//! (`tools/fixtures_attention_loss.py`): outputs and gradients within 1e-4 relative for
//! attention and the losses, 1e-5 for AdamW.

mod common;

use gpt::kernels::adamw::{adamw_update_ranges, clip_grad_norm};
use gpt::kernels::attention::{attention_backward, attention_forward, AttentionDims};
use gpt::kernels::crossentropy::{crossentropy_forward, crossentropy_forward_backward};

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn attention_fixture(name: &str) {
    let fx = common::load(&format!("attn_loss/{name}.safetensors"));
    let t = |n: &str| common::get(&fx, n).data.clone();
    let dims: Vec<usize> = t("dims").iter().map(|&x| x as usize).collect();
    let d = AttentionDims {
        b: dims[0],
        tq: dims[1],
        tk: dims[2],
        nh: dims[3],
        hs: dims[4],
    };
    let causal = dims[5] == 1;
    let mask: Option<Vec<u8>> = fx
        .get("key_mask")
        .map(|m| m.data.iter().map(|&x| x as u8).collect());
    let (q, k, v, dout) = (t("q"), t("k"), t("v"), t("dout"));

    let mut out = vec![0.0; q.len()];
    let mut lse = vec![0.0; d.b * d.nh * d.tq];
    attention_forward(&mut out, &mut lse, &q, &k, &v, mask.as_deref(), causal, d);
    common::assert_close(&format!("{name} out"), &out, &t("out"), RTOL, ATOL);
    common::assert_close(&format!("{name} lse"), &lse, &t("lse"), RTOL, ATOL);

    // Backward accumulates: start from a constant and subtract it.
    let (mut dq, mut dk, mut dv) = (vec![0.5; q.len()], vec![0.5; k.len()], vec![0.5; v.len()]);
    attention_backward(
        &mut dq,
        &mut dk,
        &mut dv,
        &dout,
        &out,
        &lse,
        &q,
        &k,
        &v,
        mask.as_deref(),
        causal,
        d,
    );
    for (g, want) in [(&mut dq, "dq"), (&mut dk, "dk"), (&mut dv, "dv")] {
        g.iter_mut().for_each(|x| *x -= 0.5);
        common::assert_close(&format!("{name} {want}"), g, &t(want), RTOL, ATOL);
    }
}

#[test]
fn attention_self_causal() {
    attention_fixture("attn_causal");
}

#[test]
fn attention_key_padding() {
    attention_fixture("attn_padded");
}

#[test]
fn attention_causal_with_key_padding() {
    attention_fixture("attn_causal_padded");
}

#[test]
fn attention_cross_with_key_padding() {
    attention_fixture("attn_cross");
}

#[test]
fn attention_causal_decoding_tq_below_tk() {
    attention_fixture("attn_decode");
}

fn crossentropy_fixture(name: &str) {
    let fx = common::load(&format!("attn_loss/{name}.safetensors"));
    let t = |n: &str| common::get(&fx, n).data.clone();
    let config = t("config");
    let (n, v, ignore_index) = (config[0] as usize, config[1] as usize, config[2] as i32);
    let smoothing = t("label_smoothing")[0];
    let dloss = t("dloss")[0];
    let targets: Vec<i32> = t("targets").iter().map(|&x| x as i32).collect();
    let logits = t("logits");

    let mut losses = vec![0.0; n];
    let mean = crossentropy_forward(
        &mut losses,
        &logits,
        &targets,
        n,
        v,
        ignore_index,
        smoothing,
    );
    common::assert_close(&format!("{name} losses"), &losses, &t("losses"), RTOL, ATOL);
    common::assert_close(&format!("{name} loss"), &[mean], &t("loss"), RTOL, ATOL);

    let mut buf = logits.clone();
    let mut losses2 = vec![0.0; n];
    let mean2 = crossentropy_forward_backward(
        &mut buf,
        &mut losses2,
        &targets,
        n,
        v,
        ignore_index,
        smoothing,
        dloss,
    );
    common::assert_close(
        &format!("{name} fused loss"),
        &[mean2],
        &t("loss"),
        RTOL,
        ATOL,
    );
    common::assert_close(
        &format!("{name} fused losses"),
        &losses2,
        &t("losses"),
        RTOL,
        ATOL,
    );
    // Gradients are O(dloss/(N·V)): the absolute floor is scaled to them.
    common::assert_close(&format!("{name} dlogits"), &buf, &t("dlogits"), RTOL, 1e-7);
}

#[test]
fn crossentropy_plain() {
    crossentropy_fixture("ce_plain");
}

#[test]
fn crossentropy_ignore_index_and_label_smoothing() {
    crossentropy_fixture("ce_ignore_smooth");
}

#[test]
fn crossentropy_custom_ignore_index() {
    crossentropy_fixture("ce_ignore_custom");
}

#[test]
fn adamw_three_steps_with_clipping_and_param_groups() {
    let fx = common::load("attn_loss/adamw.safetensors");
    let t = |n: &str| common::get(&fx, n).data.clone();
    // One flat buffer [w (4×5) | b (5)], w decays, b does not.
    let (nw, nb) = (20, 5);
    let ranges = [(0..nw, true), (nw..nw + nb, false)];
    let mut params = [t("w0"), t("b0")].concat();
    let (mut m, mut v) = (vec![0.0; nw + nb], vec![0.0; nw + nb]);
    for step in 1..=3 {
        let mut grads = [t(&format!("grad_w{step}")), t(&format!("grad_b{step}"))].concat();
        let norm = clip_grad_norm(&mut grads, 1.0);
        common::assert_close(
            &format!("norm {step}"),
            &[norm],
            &t(&format!("norm{step}")),
            1e-5,
            0.0,
        );
        adamw_update_ranges(
            &mut params,
            &grads,
            &mut m,
            &mut v,
            &ranges,
            1e-2,
            0.9,
            0.95,
            1e-8,
            0.1,
            step,
        );
        let want = [t(&format!("w{step}")), t(&format!("b{step}"))].concat();
        common::assert_close(
            &format!("params after step {step}"),
            &params,
            &want,
            1e-5,
            1e-6,
        );
    }
}
