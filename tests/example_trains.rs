//! The linear-regression example converges with its forward, backward and optimizer step in
//! one encoder, ten steps per submit.

mod common;

#[path = "../examples/linear_regression.rs"]
mod example;

#[test]
fn the_linear_regression_example_converges() {
    let ctx = common::ctx();
    let t = example::train(&ctx, 2048, 8, 400, 10).unwrap();
    let first = t.losses.first().unwrap().1;
    let last = t.losses.last().unwrap().1;
    // The targets carry noise uniform in ±0.01 (variance 3.3e-5): the loss must fall from
    // the order of the weights' energy (~10) to that floor, and the weights to the truth.
    assert!(first > 1e-2, "first read-back loss {first}");
    assert!(last < 1e-4, "loss after 400 steps {last} (losses {:?})", t.losses);
    for (k, (a, b)) in t.params.iter().zip(&t.truth).enumerate() {
        assert!((a - b).abs() < 1e-2, "weight {k}: learned {a}, true {b}");
    }
}
