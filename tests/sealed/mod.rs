//! Writing checkpoint files that are well formed but say something else.
/// A safetensors file of `tensors` and `metadata` with the checkpoint checksum recomputed, as
/// src/checkpoint.rs documents it (CRC-32 over the metadata but `checksum` by key, then each
/// tensor by name: name, dtype, shape, data, each ended by a zero byte): how a test writes a
/// file that is well formed but says something else.
pub fn sealed(
    tensors: Vec<(String, safetensors::tensor::TensorView<'_>)>,
    mut metadata: std::collections::HashMap<String, String>,
) -> Vec<u8> {
    let mut h = crc32fast::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(b);
        h.update(&[0]);
    };
    let mut keys: Vec<String> = metadata.keys().filter(|k| *k != "checksum").cloned().collect();
    keys.sort();
    for k in &keys {
        field(k.as_bytes());
        field(metadata[k].as_bytes());
    }
    let mut sorted: Vec<&(String, safetensors::tensor::TensorView<'_>)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in sorted {
        field(name.as_bytes());
        field(format!("{:?}", t.dtype()).as_bytes());
        field(t.shape().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",").as_bytes());
        field(t.data());
    }
    metadata.insert("checksum".into(), format!("crc32:{:08x}", h.finalize()));
    safetensors::serialize(tensors, Some(metadata)).unwrap()
}
