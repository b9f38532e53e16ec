//! The names of `general.file_type`, llama.cpp's `enum llama_ftype` (`include/llama.h`):
//! which quantization a model file's bulk is in. One table, so that `hearth list`, the
//! hub's `ORG/REPO:QUANT` and `hearth bench` agree.

/// `(general.file_type, llama-quantize's name)`.
const NAMES: &[(u64, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (25, "IQ4_NL"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (30, "IQ4_XS"),
    (31, "IQ1_M"),
    (32, "BF16"),
    (36, "TQ1_0"),
    (37, "TQ2_0"),
    (38, "MXFP4_MOE"),
];

/// The name users ask for (`Q4_K_M`, as `llama-quantize` and the hub's file names write
/// it); `None` for a value llama.cpp does not define.
pub fn file_type_name(file_type: u64) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(t, _)| *t == file_type)
        .map(|(_, name)| *name)
}

/// The name llama.cpp prints (`llama_model_ftype_name`, e.g. in llama-bench's model
/// column): the K-quant mixes spelled out (`Q4_K - Medium`), F32 as `all F32`, the rest as
/// [`file_type_name`].
pub fn file_type_long_name(file_type: u64) -> Option<&'static str> {
    Some(match file_type {
        0 => "all F32",
        10 => "Q2_K - Medium",
        11 => "Q3_K - Small",
        12 => "Q3_K - Medium",
        13 => "Q3_K - Large",
        14 => "Q4_K - Small",
        15 => "Q4_K - Medium",
        16 => "Q5_K - Small",
        17 => "Q5_K - Medium",
        _ => return file_type_name(file_type),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_type_name(15), Some("Q4_K_M"));
        assert_eq!(file_type_long_name(15), Some("Q4_K - Medium"));
        assert_eq!(file_type_long_name(18), Some("Q6_K"));
        assert_eq!(file_type_long_name(0), Some("all F32"));
        assert_eq!(file_type_name(4), None);
    }
}
