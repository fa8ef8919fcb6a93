//! Knowledge-graph alignment of sentence embeddings: link-prediction ROC-AUC of gene
//! and disease centroids, and RSA of gene centroids against the genes' true-disease sets.
//!
//! Entity embeddings are the mean unit sentence embedding of the rows that mention the
//! entity (a proxy for entity-only embeddings), as the `metrics` example computes them.
//! (Should move to bioalign-metrics, beside `link_prediction`, so both share it.)

use std::collections::{BTreeMap, HashMap};

use ndarray::{ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use bioalign_metrics::{LinkPrediction, Rsa, entity_centroids, link_prediction, rsa_spearman};

use crate::error::Result;

/// What [`kg_alignment`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KgAlignment {
    /// Cosine of the gene and disease centroids of each row against its label.
    pub link_prediction: LinkPrediction,
    /// RSA over genes with at least one true disease (`None` below 3 such genes, or when
    /// the genes' disease sets never overlap, so the graph similarities are constant).
    pub rsa: Option<Rsa>,
    /// Genes entering RSA (capped).
    pub rsa_genes: usize,
}

/// Link prediction and RSA from embeddings `x` (`[n, d]`), the rows' gene and disease
/// names and labels; RSA takes at most `rsa_max_genes` genes (in name order).
pub fn kg_alignment(
    x: ArrayView2<'_, f32>,
    genes: &[&str],
    diseases: &[&str],
    labels: &[usize],
    rsa_max_genes: usize,
) -> Result<KgAlignment> {
    let (gk, gc) = entity_centroids(x, genes)?;
    let (dk, dc) = entity_centroids(x, diseases)?;
    let gi: HashMap<&str, usize> = gk.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let di: HashMap<&str, usize> = dk.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let g_rows = gc.select(Axis(0), &genes.iter().map(|g| gi[g]).collect::<Vec<_>>());
    let d_rows = dc.select(Axis(0), &diseases.iter().map(|d| di[d]).collect::<Vec<_>>());
    let link = link_prediction(g_rows.view(), d_rows.view(), labels)?;
    let mut disease_id: HashMap<&str, usize> = HashMap::new();
    let mut sets: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for ((g, d), &l) in genes.iter().zip(diseases).zip(labels) {
        let next = disease_id.len();
        let id = *disease_id.entry(d).or_insert(next);
        if l == 1 {
            sets.entry(g).or_default().push(id);
        }
    }
    let chosen: Vec<(&str, Vec<usize>)> = sets.into_iter().take(rsa_max_genes).collect();
    let rsa_genes = chosen.len();
    let rsa = if rsa_genes >= 3 {
        let rows: Vec<usize> = chosen.iter().map(|(g, _)| gi[g]).collect();
        let emb = gc.select(Axis(0), &rows);
        let neighbours: Vec<Vec<usize>> = chosen.into_iter().map(|(_, s)| s).collect();
        match rsa_spearman(emb.view(), &neighbours) {
            Ok(r) => Some(r),
            // Disjoint disease sets everywhere (small samples): RSA is undefined.
            Err(bioalign_metrics::Error::Constant { .. }) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    Ok(KgAlignment {
        link_prediction: link,
        rsa,
        rsa_genes,
    })
}
