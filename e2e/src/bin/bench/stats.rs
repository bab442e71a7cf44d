//! Figures (a value per run, min/median/max), percentiles, and the table with the `bench:` line.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::args::Args;

/// One figure: a value per run.
#[derive(Debug, Default, Clone)]
pub struct Figure {
    pub values: Vec<f64>,
}

impl Figure {
    pub fn push(&mut self, v: f64) {
        self.values.push(v);
    }
    pub fn sorted(&self) -> Vec<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// Nearest-rank percentile of a sample.
pub fn percentile(sample: &[f64], p: f64) -> f64 {
    if sample.is_empty() {
        return f64::NAN;
    }
    let mut v = sample.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The latency of each of `names` in ms: from its `from` instant to its `to` instant (0 when `to`
/// is earlier).
pub fn latencies(
    names: &[String],
    from: &HashMap<String, Instant>,
    to: &HashMap<String, Instant>,
) -> Vec<f64> {
    names
        .iter()
        .map(|n| ms(to[n].saturating_duration_since(from[n])))
        .collect()
}

/// A row of the table, in print order.
#[derive(Debug)]
pub struct Row {
    pub section: &'static str,
    pub name: String,
    pub key: Option<&'static str>,
    pub figure: Figure,
    pub target: &'static str,
    pub decimals: usize,
}

#[derive(Debug, Default)]
pub struct Results {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Results {
    pub fn add(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        key: Option<&'static str>,
        figure: Figure,
        target: &'static str,
        decimals: usize,
    ) {
        self.rows.push(Row {
            section,
            name: name.into(),
            key,
            figure,
            target,
            decimals,
        });
    }

    /// The median of the row with `key`.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.key == Some(key))
            .map(|r| r.figure.median())
    }

    pub fn print(&self, args: &Args, elapsed: Duration) {
        let head = format!(
            "bpfpin benchmark: {} nodes, {} objects, {} cluster runs, {} local runs{} ({:.0} s)",
            args.nodes,
            args.objects,
            args.runs,
            args.micro_runs,
            if args.smoke { ", smoke" } else { "" },
            elapsed.as_secs_f64()
        );
        self.print_with(
            &head,
            &format!("bench: nodes={} objects={}", args.nodes, args.objects),
            &[],
        );
    }

    /// The table under `head`, then one line `line key=value ...`: the keys in `order` first
    /// (every one of them, NaN if not measured), then the other keys in row order.
    pub fn print_with(&self, head: &str, line: &str, order: &[&'static str]) {
        println!();
        println!("{head}");
        let mut section = "";
        println!(
            "{:<58} {:>10} {:>10} {:>10}  {:<10} key",
            "figure", "median", "min", "max", "target"
        );
        for r in &self.rows {
            if r.section != section {
                section = r.section;
                println!("-- {section}");
            }
            let f = |v: f64| format!("{v:.*}", r.decimals);
            println!(
                "{:<58} {:>10} {:>10} {:>10}  {:<10} {}",
                r.name,
                f(r.figure.median()),
                f(r.figure.min()),
                f(r.figure.max()),
                r.target,
                r.key.unwrap_or("")
            );
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        let mut line = line.to_owned();
        let mut seen = BTreeSet::new();
        let value = |r: &Row| {
            let v = r.figure.median();
            let digits = if r.decimals == 0 && v.fract() == 0.0 {
                0
            } else {
                r.decimals.max(1)
            };
            format!("{v:.digits$}")
        };
        for k in order {
            seen.insert(*k);
            match self.rows.iter().find(|r| r.key == Some(k)) {
                Some(r) => line.push_str(&format!(" {k}={}", value(r))),
                None => line.push_str(&format!(" {k}=NaN")),
            }
        }
        for r in &self.rows {
            if let Some(k) = r.key
                && seen.insert(k)
            {
                line.push_str(&format!(" {k}={}", value(r)));
            }
        }
        println!("{line}");
    }
}
