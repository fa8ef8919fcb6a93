//! `sample_rows` against pandas' `df.sample(n=k, random_state=seed)` (pandas 2.x / numpy
//! 2.x, fixture from `scripts/fixtures/gen_study_sample.py`).

use bioalign_study::{Result, sample_rows};

#[test]
fn sample_matches_pandas() -> Result<()> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pandas_sample.json");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    let cases = v["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 4);
    for c in cases {
        let n = c["n"].as_u64().unwrap() as usize;
        let k = c["k"].as_u64().unwrap() as usize;
        let seed = c["seed"].as_u64().unwrap();
        let want: Vec<usize> = c["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(sample_rows(n, k, seed)?, want, "n={n} k={k} seed={seed}");
    }
    Ok(())
}
