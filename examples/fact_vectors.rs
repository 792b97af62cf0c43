//! A measurement behind the kiosk's retrieval (README, "Kiosk grounding"): sentence vectors
//! from the language model's own hidden state (PromptEOL-style: each text inside a prompt
//! that asks for its meaning in one word), against BM25, for picking the fact a question
//! is about and for telling answerable questions from the ones to abstain on (AUC of the
//! best similarity, fact cases against abstain cases).
//!
//! `cargo run --release --example fact_vectors -- 'TEMPLATE' ['FACT TEMPLATE|QUESTION TEMPLATE' ...]`
//! with `{}` where the text goes; per-case rows go to stderr (TSV).
use std::path::Path;

use llm::{Llm, Segment, Session};
use percept::kiosk::Knowledge;
use percept::kiosk::eval::{EvalSet, Kind};
use percept::kiosk::retrieval::FactIndex;

fn norm(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

fn main() -> anyhow::Result<()> {
    let device = percept::device::select(percept::device::DeviceChoice::Cpu, 2)?;
    let path = percept::models::require("smollm2-135m-instruct")?;
    let llm = Llm::load(&path, &device, |_, _| {})?;
    let templates: Vec<String> = std::env::args().skip(1).collect();
    let sets = ["dev", "dev2", "heldout"];
    for template in &templates {
        let (ft, qt) = template.split_once('|').unwrap_or((template, template));
        let vec_with = |t: &str, text: &str| -> Vec<f32> {
            let prompt = t.replace("{}", text);
            let ids = llm.tokenizer.encode(&prompt, false).unwrap();
            let mut v = llm
                .hidden_state(&mut Session::new(), &[Segment::Tokens(ids)])
                .unwrap();
            norm(&mut v);
            v
        };
        let (mut right_v, mut right_b, mut n) = (0, 0, 0);
        let mut fact_top = Vec::new();
        let mut abstain_top = Vec::new();
        for set in sets {
            let set = EvalSet::load(Path::new(&format!("fixtures/kiosk/eval/{set}.toml")))?;
            for (venue, file) in &set.venues {
                let k = Knowledge::load(file)?;
                let facts = k.fact_list();
                let fv: Vec<Vec<f32>> = facts.iter().map(|f| vec_with(ft, f)).collect();
                let index = FactIndex::new(&facts);
                for case in set.cases.iter().filter(|c| &c.venue == venue) {
                    let Some(say) = &case.say else { continue };
                    let q = vec_with(qt, say);
                    let sims: Vec<f32> = fv
                        .iter()
                        .map(|f| f.iter().zip(&q).map(|(a, b)| a * b).sum())
                        .collect();
                    let (best, top) = sims
                        .iter()
                        .enumerate()
                        .fold((0, f32::MIN), |a, (i, &s)| if s > a.1 { (i, s) } else { a });
                    let gold0: Vec<usize> = (0..facts.len())
                        .filter(|&i| {
                            !case.expect.is_empty()
                                && case
                                    .expect
                                    .iter()
                                    .all(|e| facts[i].to_lowercase().contains(&e.to_lowercase()))
                        })
                        .collect();
                    let r = index.rank(say);
                    let (bf, cov) = r
                        .best()
                        .map(|h| (h.fact, h.coverage))
                        .unwrap_or((usize::MAX, 0.0));
                    let bsim = if bf == usize::MAX { 0.0 } else { sims[bf] };
                    eprintln!(
                        "TSV\t{:?}\t{:?}\t{}\t{}\t{:.3}\t{:.4}\t{:.4}\t{}\t{say}",
                        case.kind,
                        gold0,
                        best,
                        bf,
                        cov,
                        top,
                        bsim,
                        r.unknown.len()
                    );
                    match case.kind {
                        Kind::Fact => {
                            let gold: Vec<usize> = (0..facts.len())
                                .filter(|&i| {
                                    case.expect.iter().all(|e| {
                                        facts[i].to_lowercase().contains(&e.to_lowercase())
                                    })
                                })
                                .collect();
                            n += 1;
                            let bm = index.rank(say).best().map(|h| h.fact);
                            if gold.contains(&best) {
                                right_v += 1;
                            } else {
                                println!(
                                    "  miss {say:?} -> {:?}",
                                    &facts[best][..40.min(facts[best].len())]
                                );
                            }
                            if bm.is_some_and(|b| gold.contains(&b)) {
                                right_b += 1;
                            }
                            fact_top.push(top);
                        }
                        Kind::Abstain => abstain_top.push(top),
                        _ => {}
                    }
                }
            }
        }
        fact_top.sort_by(f32::total_cmp);
        abstain_top.sort_by(f32::total_cmp);
        // AUC: share of (fact, abstain) pairs where the fact case's top similarity is higher.
        let pairs = fact_top.len() * abstain_top.len();
        let above: usize = fact_top
            .iter()
            .map(|f| abstain_top.iter().filter(|a| *a < f).count())
            .sum();
        println!(
            "{template:?}: vector top-1 {right_v}/{n}, bm25 top-1 {right_b}/{n}, AUC fact-vs-abstain {:.3}",
            above as f64 / pairs as f64
        );
    }
    Ok(())
}
