//! The command validates every argument before any work: a bad value exits non-zero at once,
//! naming the value and what is allowed.

use std::process::Command;

fn refused(args: &[&str], says: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgpu-optim")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    for s in says {
        assert!(stderr.contains(s), "{args:?}: {s:?} not in {stderr}");
    }
}

#[test]
fn bad_arguments_are_refused_before_any_work() {
    refused(&["bench", "--log2-sizes", "64"], &["64", "0..=40"]);
    refused(&["bench", "--log2-sizes", "20,41"], &["41"]);
    refused(&["bench", "--steps-per-submit", "0"], &["0", "1..=128"]);
    refused(&["bench", "--steps-per-submit", "100000"], &["100000"]);
    refused(&["bench", "--max-gib", "0"], &["\"0\"", "positive"]);
    refused(&["bench", "--max-gib", "nan"], &["positive"]);
    refused(&["tune", "--log2-size", "41"], &["41"]);
    refused(&["bench", "--json", "/no/such/directory/x.json"], &["--json /no/such/directory/x.json", "cannot write"]);
    refused(&["tune", "--save", "/no/such/directory/t.json"], &["--save /no/such/directory/t.json", "cannot write"]);
    refused(&["bench", "--optimizer", "adafactor"], &["Adafactor", "shape"]);
    refused(&["bench", "--precision", "bf8"], &["bf8", "bf16-master", "f16"]);
}
