//! Local-mode figures: GC rate, load overhead against bpftool, cold `--once`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bpfpin_agent::{DesiredObject, Reconciler};
use bpfpin_crds::{BpfObject, BpfObjectSpec};

use crate::COUNTER_PROGRAMS;
use crate::args::Args;
use crate::cluster::LABEL;
use crate::host::{count_pins, mount_bpffs, umount};
use crate::stats::{Figure, Results, ms};

pub fn spec_yaml(name: &str, bytecode: &Path, programs: &[String], selector: bool) -> String {
    let progs: String = programs
        .iter()
        .map(|p| format!("  - name: {p}\n"))
        .collect();
    let sel = if selector {
        format!("  nodeSelector: {{matchLabels: {{{LABEL}: \"yes\"}}}}\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata:\n  name: {name}\nspec:\n{sel}  bytecode: {{path: {}}}\n  programs:\n{progs}",
        bytecode.display()
    )
}

pub fn many_programs() -> Vec<String> {
    (0..24).map(|i| format!("prog_{i}")).collect()
}

pub fn counter_programs() -> Vec<String> {
    COUNTER_PROGRAMS.iter().map(|s| (*s).to_owned()).collect()
}

pub struct Local<'a> {
    pub args: &'a Args,
    pub work: PathBuf,
    pub bytecode: PathBuf,
    pub agent: PathBuf,
}

impl Local<'_> {
    pub fn once(&self, manifests: &Path, bpffs: &Path) -> Result<Duration> {
        let started = Instant::now();
        let status = Command::new(&self.agent)
            .args(["local", "--once", "--manifests"])
            .arg(manifests)
            .arg("--bpffs")
            .arg(bpffs)
            .arg("--bytecode-dir")
            .arg(&self.bytecode)
            .arg("--cache-dir")
            .arg(self.work.join("cache"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let took = started.elapsed();
        if !status.success() {
            bail!(
                "bpfpin-agent local --once --manifests {} failed ({status})",
                manifests.display()
            );
        }
        Ok(took)
    }

    /// `bpftool prog loadall many.bpf.o <dir>/progs pinmaps <dir>/maps`, wall time.
    pub fn bpftool(&self, dir: &Path) -> Result<Duration> {
        let obj = self.bytecode.join("many.bpf.o");
        std::fs::create_dir_all(dir)?;
        let started = Instant::now();
        let out = Command::new("bpftool")
            .args(["prog", "loadall"])
            .arg(&obj)
            .arg(dir.join("progs"))
            .arg("pinmaps")
            .arg(dir.join("maps"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "bpftool prog loadall {} {}/progs pinmaps {}/maps failed ({}): {}",
                obj.display(),
                dir.display(),
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    }

    pub fn gc(&self, res: &mut Results) -> Result<()> {
        let mut rate = Figure::default();
        let mut pass = Figure::default();
        let mut pins = Figure::default();
        let mut load = Figure::default();
        for r in 0..self.args.runs {
            let dir = self.work.join(format!("gc-{r}"));
            let bpffs = dir.join("bpffs");
            let manifests = dir.join("manifests");
            std::fs::create_dir_all(&manifests)?;
            mount_bpffs(&bpffs)?;
            let result = (|| -> Result<()> {
                let docs: Vec<String> = (0..self.args.gc_objects)
                    .map(|i| {
                        spec_yaml(
                            &format!("gc-{i:03}"),
                            &self.bytecode.join("counter.bpf.o"),
                            &counter_programs(),
                            false,
                        )
                    })
                    .collect();
                let file = manifests.join("objects.yaml");
                std::fs::write(&file, docs.join("---\n"))?;
                load.push(ms(self.once(&manifests, &bpffs)?));
                let before = count_pins(&bpffs.join("bpfpin"));
                std::fs::remove_file(&file)?;
                let took = self.once(&manifests, &bpffs)?;
                let after = count_pins(&bpffs.join("bpfpin"));
                if after != 0 || before == 0 {
                    bail!("GC pass left {after} of {before} pins");
                }
                pins.push(before as f64);
                pass.push(ms(took));
                rate.push((before - after) as f64 / took.as_secs_f64());
                Ok(())
            })();
            umount(&bpffs);
            result?;
        }
        let sec =
            "local mode: garbage collection (counter.bpf.o x 100, 3 programs, no attachments)";
        res.add(
            sec,
            format!(
                "pin {} objects, --once, whole process (ms)",
                self.args.gc_objects
            ),
            None,
            load,
            "",
            0,
        );
        res.add(sec, "pins under the root before GC", None, pins, "", 0);
        res.add(sec, "GC --once, whole process (ms)", None, pass, "", 1);
        res.add(
            sec,
            "GC rate (pins unlinked / s)",
            Some("gc_pins_per_s"),
            rate,
            ">= 5000",
            0,
        );
        Ok(())
    }

    pub fn load(&self, res: &mut Results) -> Result<()> {
        let bpffs = self.work.join("load-bpffs");
        mount_bpffs(&bpffs)?;
        let result = self.load_inner(res, &bpffs);
        umount(&bpffs);
        result
    }

    pub fn load_inner(&self, res: &mut Results, bpffs: &Path) -> Result<()> {
        let spec: BpfObjectSpec = {
            let yaml = spec_yaml(
                "many",
                &self.bytecode.join("many.bpf.o"),
                &many_programs(),
                false,
            );
            let obj: BpfObject = serde_yaml::from_str(&yaml)?;
            obj.spec
        };
        let started = Instant::now();
        let mut reconciler = Reconciler::new(bpffs).map_err(|e| anyhow::anyhow!("{e}"))?;
        let new_ms = ms(started.elapsed());
        let none = BTreeSet::new();
        let mut agent = Figure::default();
        let mut tool = Figure::default();
        let mut ratio = Figure::default();
        let mut cold = Figure::default();
        let mut cold_tool = Figure::default();
        let manifests = self.work.join("cold-manifests");
        std::fs::create_dir_all(&manifests)?;
        let empty = self.work.join("idle-manifests");
        std::fs::create_dir_all(&empty)?;
        let mut idle = Figure::default();
        std::fs::write(
            manifests.join("many.yaml"),
            spec_yaml(
                "many",
                &self.bytecode.join("many.bpf.o"),
                &many_programs(),
                false,
            ),
        )?;
        for i in 0..self.args.micro_runs {
            // Interleaved, order alternating, so drift hits both sides alike.
            let mut a = 0.0;
            let mut b = 0.0;
            for side in [i % 2, 1 - i % 2] {
                if side == 0 {
                    let started = Instant::now();
                    let bytes = std::fs::read(self.bytecode.join("many.bpf.o"));
                    let obj = DesiredObject {
                        name: "many".into(),
                        uid: None,
                        generation: 1,
                        spec: spec.clone(),
                        bytecode: bytes.map_err(|e| {
                            bpfpin_agent::error::ObjectError::new(
                                bpfpin_agent::error::Reason::BytecodeUnavailable,
                                e.to_string(),
                            )
                        }),
                    };
                    let report = reconciler.reconcile(std::slice::from_ref(&obj), &none);
                    a = ms(started.elapsed());
                    let r = &report.objects[0];
                    if let Some(e) = &r.error {
                        bail!("reconcile of many.bpf.o failed: {e}");
                    }
                    if r.pinned.as_ref().map(|p| p.programs.len()) != Some(24) {
                        bail!("reconcile of many.bpf.o pinned {:?}", r.pinned);
                    }
                    // Untimed: unpin it again, so the next run is a new object.
                    let gone = reconciler.reconcile(&[], &none);
                    if gone.removed.len() != 1 {
                        bail!("the object was not unpinned between runs");
                    }
                } else {
                    let dir = bpffs.join(format!("bpftool-{i}"));
                    b = ms(self.bpftool(&dir)?);
                    if count_pins(&dir) != 25 {
                        bail!(
                            "bpftool pinned {} files, not 24 programs + 1 map",
                            count_pins(&dir)
                        );
                    }
                    std::fs::remove_dir_all(&dir)?;
                }
            }
            agent.push(a);
            tool.push(b);
            ratio.push(a / b);

            // Cold: a whole `--once` process on a fresh bpffs, and bpftool on a fresh bpffs.
            let fresh = self.work.join(format!("cold-{i}"));
            mount_bpffs(&fresh)?;
            let r = self.once(&manifests, &fresh);
            umount(&fresh);
            cold.push(ms(r?));
            let fresh = self.work.join(format!("cold-tool-{i}"));
            mount_bpffs(&fresh)?;
            let r = self.bpftool(&fresh.join("many"));
            umount(&fresh);
            cold_tool.push(ms(r?));

            // Idle: a whole `--once` process with nothing to do (no manifests) on a fresh bpffs.
            let fresh = self.work.join(format!("idle-{i}"));
            mount_bpffs(&fresh)?;
            let r = self.once(&empty, &fresh);
            umount(&fresh);
            idle.push(ms(r?));
        }
        let mut cold_ratio = Figure::default();
        cold_ratio.push(cold.median() / cold_tool.median());
        let sec = "load overhead: many.bpf.o (24 programs, 1 map, no attachments)";
        let mut f = Figure::default();
        f.push(new_ms);
        res.add(
            sec,
            "Reconciler::new (mount check + kernel BTF parse) (ms)",
            None,
            f,
            "",
            1,
        );
        let mut r = Figure::default();
        r.push(agent.median() / tool.median());
        res.add(
            sec,
            "running agent: reconcile() of a new object (ms)",
            Some("load_agent_ms"),
            agent,
            "",
            1,
        );
        res.add(
            sec,
            "baseline: bpftool prog loadall ... pinmaps (ms)",
            Some("load_bpftool_ms"),
            tool,
            "",
            1,
        );
        res.add(
            sec,
            "load_ratio = median(agent) / median(bpftool)",
            Some("load_ratio"),
            r,
            "<= 1.25",
            2,
        );
        res.add(sec, "per-run ratio agent/bpftool", None, ratio, "", 2);
        res.add(
            sec,
            "cold: bpfpin-agent local --once, fresh bpffs (ms)",
            Some("cold_once_ms"),
            cold,
            "<= 60",
            1,
        );
        res.add(
            sec,
            "baseline: bpftool loadall, fresh bpffs (ms)",
            None,
            cold_tool,
            "",
            1,
        );
        res.add(
            sec,
            "cold_ratio = median(cold --once) / median(cold bpftool)",
            Some("cold_ratio"),
            cold_ratio,
            "<= 1.25",
            2,
        );
        res.add(
            sec,
            "idle: bpfpin-agent local --once, no manifests, fresh bpffs (ms)",
            Some("idle_once_ms"),
            idle,
            "<= 1.5",
            1,
        );
        Ok(())
    }
}
