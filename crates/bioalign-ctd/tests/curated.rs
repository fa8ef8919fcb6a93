//! Integration tests on the real curated CTD file (found through
//! `bioalign_io::data_mirror()`, i.e. `BIOALIGN_DATA_MIRROR`, default
//! `../shared/datasets`). Expected figures are the reference study's, from
//! `../shared/SPEC.md` section 1 and its split files in `seed-splits/`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use bioalign_ctd::{
    CtdReader, EvidenceFilter, Example, HoldoutEntities, PrepareConfig, Prepared, ReadOptions,
    Result, SamplerKind, collect_positives, prepare, read_csv, read_parquet, write_outputs,
};

fn curated() -> PathBuf {
    bioalign_io::data_mirror().join("ctd/CTD_curated_genes_diseases.csv")
}

fn seed_splits() -> PathBuf {
    bioalign_io::data_mirror().join("seed-splits")
}

fn build(negatives: SamplerKind) -> Result<Prepared> {
    let cfg = PrepareConfig {
        negatives,
        ..Default::default()
    };
    prepare(&curated(), &cfg, |_, _| {})
}

/// Every (gene, disease) name pair the file associates through any evidence.
fn known_pairs() -> Result<HashSet<(String, String)>> {
    let mut r = CtdReader::open(curated(), ReadOptions::default())?;
    let p = collect_positives(&mut r, &EvidenceFilter::new::<&str>([]), |_, _| {})?;
    Ok(p.known
        .iter()
        .map(|k| {
            let (g, d) = ((k >> 32) as u32, (k & 0xFFFF_FFFF) as u32);
            (p.genes.name(g).to_string(), p.diseases.name(d).to_string())
        })
        .collect())
}

fn counts<'a>(it: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut m = HashMap::new();
    it.for_each(|k| *m.entry(k).or_default() += 1);
    m
}

#[test]
fn uniform_sampler_reproduces_reference_figures() -> Result<()> {
    let p = build(SamplerKind::Uniform)?;
    let c = &p.card;
    // Exact figures of SPEC.md section 1.
    assert_eq!(
        (c.rows.positives, c.rows.negatives, c.rows.rows),
        (34_222, 34_222, 68_444)
    );
    assert_eq!((c.distinct_genes, c.distinct_diseases), (9_111, 5_858));
    let pm = &c.pubmed_ids_per_positive;
    assert_eq!(format!("{:.2}", pm.mean), "1.09");
    assert_eq!((pm.max, pm.none, pm.several), (84, 4_408, 3_605));
    assert_eq!(
        (c.pair_split.train.rows, c.pair_split.test.rows),
        (54_755, 13_689)
    );
    assert_eq!(
        (c.pair_split.test.positives, c.pair_split.test.negatives),
        (6_844, 6_845)
    );
    assert_eq!((c.held_out.genes, c.held_out.diseases), (911, 585));
    // Sentence length over all rows depends on which negatives are drawn. With
    // uniform negatives its expectation is 51.95 (positives 46.998, negatives
    // 56.906 = mean distinct-gene length + 20 + mean distinct-disease length); the
    // reference's draw gave 52.0 / 49, ours (ChaCha8, seed 42) 51.94 / 48. The
    // standard error of the mean is about 0.04, so we check within 0.1 and 1.
    assert!(
        (c.sentence_length.mean - 52.0).abs() <= 0.1,
        "{}",
        c.sentence_length.mean
    );
    assert!(
        (c.sentence_length.median - 49.0).abs() <= 1.0,
        "{}",
        c.sentence_length.median
    );
    // No negative is a pair CTD associates through any evidence.
    let known = known_pairs()?;
    for e in p.rows.iter().filter(|e| e.label == 0) {
        assert!(
            !known.contains(&(e.gene_symbol.clone(), e.disease_name.clone())),
            "{}",
            e.text
        );
        assert!(e.pubmed_ids.is_empty());
    }
    // Uniform negatives leave the popularity shortcut wide open.
    let s = &c.pair_split.popularity_shortcut;
    assert!(
        s.train_auc.unwrap() > 0.8 && s.test_auc.unwrap() > 0.8,
        "{s:?}"
    );
    // A pair split leaks entities; an entity split never has both entities in train.
    assert!(c.pair_split.leakage.both_in_train > 13_000);
    assert_eq!(c.entity_heldout_split.leakage.both_in_train, 0);
    assert_eq!(c.entity_heldout_split.leakage.pair_in_train, 0);
    Ok(())
}

#[test]
fn degree_matched_negatives_have_the_positives_degrees() -> Result<()> {
    let p = build(SamplerKind::DegreeMatched)?;
    let pos = |l: u8| p.rows.iter().filter(move |e| e.label == l);
    assert_eq!(
        counts(pos(0).map(|e| e.gene_symbol.as_str())),
        counts(pos(1).map(|e| e.gene_symbol.as_str()))
    );
    assert_eq!(
        counts(pos(0).map(|e| e.disease_name.as_str())),
        counts(pos(1).map(|e| e.disease_name.as_str()))
    );
    let known = known_pairs()?;
    let mut seen = HashSet::new();
    for e in pos(0) {
        assert!(!known.contains(&(e.gene_symbol.clone(), e.disease_name.clone())));
        assert!(seen.insert(&e.text), "duplicate negative {}", e.text);
    }
    // Popularity no longer predicts the label (uniform gives > 0.8, see above).
    for s in [
        &p.card.pair_split.popularity_shortcut,
        &p.card.entity_heldout_split.popularity_shortcut,
    ] {
        for auc in [s.train_auc.unwrap(), s.test_auc.unwrap()] {
            assert!((auc - 0.5).abs() < 0.05, "popularity AUC {auc}");
        }
    }
    Ok(())
}

#[test]
fn corrupt_one_side_keeps_exact_counts_and_no_known_pairs() -> Result<()> {
    let p = build(SamplerKind::CorruptOneSide)?;
    assert_eq!(
        (p.card.rows.positives, p.card.rows.negatives),
        (34_222, 34_222)
    );
    let known = known_pairs()?;
    for e in p.rows.iter().filter(|e| e.label == 0) {
        assert!(!known.contains(&(e.gene_symbol.clone(), e.disease_name.clone())));
    }
    let s = &p.card.pair_split.popularity_shortcut;
    assert!(s.test_auc.unwrap() < 0.6, "{s:?}");
    Ok(())
}

#[test]
fn reference_holdout_lists_reproduce_its_entity_split_positives() -> Result<()> {
    let lists = HoldoutEntities::from_json_file(&seed_splits().join("prep_metadata.json"))?;
    let cfg = PrepareConfig {
        holdout_entities: Some(lists.clone()),
        ..Default::default()
    };
    let p = prepare(&curated(), &cfg, |_, _| {})?;
    assert_eq!(
        (p.card.held_out.genes, p.card.held_out.diseases),
        (911, 585)
    );
    assert!(
        p.card.held_out.unknown_genes.is_empty() && p.card.held_out.unknown_diseases.is_empty()
    );
    // The positives of the entity test split are exactly the reference's
    // (test_entityheld.csv: 12,146 rows of which 5,703 positives). Negatives are
    // drawn by our RNG, so only their rule is checked, not their number
    // (reference 6,443; ours differs by sampling).
    let reference = read_csv(&seed_splits().join("test_entityheld.csv"))?;
    let ref_pos: HashSet<&str> = reference
        .iter()
        .filter(|e| e.label == 1)
        .map(|e| e.text.as_str())
        .collect();
    let test = p.part(&p.entity_split.test);
    let our_pos: HashSet<&str> = test
        .iter()
        .filter(|e| e.label == 1)
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(ref_pos.len(), 5_703);
    assert_eq!(our_pos, ref_pos);
    let hg: HashSet<&str> = lists.holdout_genes.iter().map(String::as_str).collect();
    let hd: HashSet<&str> = lists.holdout_diseases.iter().map(String::as_str).collect();
    let touches =
        |e: &Example| hg.contains(e.gene_symbol.as_str()) || hd.contains(e.disease_name.as_str());
    assert!(test.iter().all(|e| touches(e)));
    assert!(p.part(&p.entity_split.train).iter().all(|e| !touches(e)));
    assert_eq!(p.card.entity_heldout_split.train.positives, 34_222 - 5_703);
    Ok(())
}

#[test]
fn reference_test_split_reads_as_a_dataset_with_our_texts() -> Result<()> {
    let rows = read_csv(&seed_splits().join("test_pairs.csv"))?;
    assert_eq!(rows.len(), 13_689);
    assert_eq!(rows.iter().filter(|e| e.label == 1).count(), 6_844);
    // Every reference positive is one of our positives, with the same text.
    let p = build(SamplerKind::Uniform)?;
    let ours: HashMap<&str, &Example> = p
        .rows
        .iter()
        .filter(|e| e.label == 1)
        .map(|e| (e.text.as_str(), e))
        .collect();
    for r in rows.iter().filter(|e| e.label == 1) {
        let o = ours
            .get(r.text.as_str())
            .unwrap_or_else(|| panic!("missing positive {}", r.text));
        assert_eq!(
            (o.gene_symbol.as_str(), o.disease_name.as_str()),
            (r.gene_symbol.as_str(), r.disease_name.as_str())
        );
        let mut a = o.pubmed_ids.clone();
        let mut b = r.pubmed_ids.clone();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{}", r.text);
    }
    Ok(())
}

#[test]
fn outputs_round_trip_and_runs_are_deterministic() -> Result<()> {
    let p = build(SamplerKind::Uniform)?;
    let dir = tempfile::tempdir().expect("temp dir");
    let written = write_outputs(&p, dir.path())?;
    assert_eq!(written.len(), 8 + 2 + 5);
    for (name, part) in bioalign_ctd::pipeline::SPLIT_FILES.iter().zip(p.parts()) {
        let expected: Vec<Example> = part.into_iter().cloned().collect();
        assert_eq!(
            read_parquet(&dir.path().join(format!("{name}.parquet")))?,
            expected,
            "{name}.parquet"
        );
        assert_eq!(
            read_csv(&dir.path().join(format!("{name}.csv")))?,
            expected,
            "{name}.csv"
        );
    }
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dataset_card.json")).expect("card"))
            .expect("json");
    assert_eq!(card["rows"]["rows"], 68_444);
    assert_eq!(
        card["provenance"]["input_sha256"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(card["parameters"]["seed"], 42);
    for png in [
        "class_balance",
        "sentence_length",
        "evidence_count",
        "top_genes",
        "top_diseases",
    ] {
        let bytes = std::fs::read(dir.path().join(format!("plots/{png}.png"))).expect(png);
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
    }
    let again = build(SamplerKind::Uniform)?;
    assert_eq!(again.rows, p.rows);
    assert_eq!(again.pair_split, p.pair_split);
    assert_eq!(again.entity_split, p.entity_split);
    Ok(())
}
