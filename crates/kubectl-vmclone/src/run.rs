//! `run` (alias `apply`): create clones and, with `--wait`, follow them.
//!
//! Every clone is first submitted as a server-side dry run, so a request of which any part is
//! invalid creates nothing. Following uses **one** watch of the namespace's clones, however many
//! there are (and, for the DataVolume strategy, one watch of its DataVolumes for the volume
//! bars). On a terminal the display is redrawn in place: a line per clone with its phase, and a
//! bar per volume; otherwise every change is printed as a timestamped line.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clone_api::kubevirt::DataVolume;
use clone_api::names::condition;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::cli::{Global, RunArgs};
use crate::{Exit, UsageError, client, create};

/// Creates the clones and, with `--wait`, follows them.
pub async fn command(global: &Global, args: &RunArgs) -> anyhow::Result<Exit> {
    let (client, namespace) = client::connect(global).await?;
    let clones = create::clones(Some(&namespace), &args.clone)?;
    create_all(&client, &namespace, &clones).await?;
    if !args.wait {
        return Ok(Exit::Success);
    }
    let names: Vec<String> = clones.iter().map(ResourceExt::name_any).collect();
    let display = Display::new(std::io::stdout().is_terminal());
    follow(client, &namespace, names, args.timeout, display).await
}

/// Dry-runs every clone, then creates them: nothing is created unless the API server (its schema
/// and the admission policy) would admit every one.
async fn create_all(
    client: &Client,
    namespace: &str,
    clones: &[VirtualMachineClone],
) -> anyhow::Result<()> {
    let api = Api::<VirtualMachineClone>::namespaced(client.clone(), namespace);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut refused = Vec::new();
    for clone in clones {
        if let Err(error) = api.create(&dry, clone).await {
            match error {
                kube::Error::Api(status) if status.code < 500 => {
                    refused.push(format!("clone {}: {}", clone.name_any(), status.message))
                }
                other => {
                    return Err(other).context(format!("submitting clone {}", clone.name_any()));
                }
            }
        }
    }
    if !refused.is_empty() {
        return Err(UsageError(format!("nothing was created:\n{}", refused.join("\n"))).into());
    }
    for clone in clones {
        api.create(&PostParams::default(), clone)
            .await
            .with_context(|| format!("creating clone {}", clone.name_any()))?;
        println!(
            "virtualmachineclone.clone.kubevirt.io/{} created",
            clone.name_any()
        );
    }
    Ok(())
}

/// What is known about one clone.
#[derive(Debug, Clone, Default, PartialEq)]
struct CloneView {
    uid: String,
    phase: String,
    reason: String,
    message: String,
    target: Option<String>,
}

impl CloneView {
    fn of(clone: &VirtualMachineClone) -> Self {
        let status = clone.status.clone().unwrap_or_default();
        let ready = status.condition(condition::READY);
        let progressing = status.condition(condition::PROGRESSING);
        let message = if status.phase.is_terminal() {
            ready.and_then(|c| c.message.clone())
        } else {
            progressing
                .and_then(|c| c.message.clone())
                .or_else(|| ready.and_then(|c| c.message.clone()))
        };
        CloneView {
            uid: clone.metadata.uid.clone().unwrap_or_default(),
            phase: match status.phase {
                ClonePhase::Unset => "Pending".to_owned(),
                phase => phase.as_str().to_owned(),
            },
            reason: ready.and_then(|c| c.reason.clone()).unwrap_or_default(),
            message: message.unwrap_or_default(),
            target: status.target_name,
        }
    }

    fn terminal(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

/// One DataVolume of a target: (volume's DataVolume name, phase, progress in percent).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VolumeView {
    pub(crate) name: String,
    pub(crate) phase: String,
    pub(crate) percent: Option<f64>,
}

/// The state of the whole run.
#[derive(Debug, Default)]
struct World {
    clones: BTreeMap<String, CloneView>,
    /// Target VM name → its DataVolumes.
    volumes: BTreeMap<String, BTreeMap<String, VolumeView>>,
}

impl World {
    fn volumes_of(&self, clone: &CloneView) -> Vec<&VolumeView> {
        clone
            .target
            .as_ref()
            .and_then(|t| self.volumes.get(t))
            .map(|v| v.values().collect())
            .unwrap_or_default()
    }
}

enum Change {
    Clone(Box<VirtualMachineClone>),
    Volume(Box<DataVolume>),
    Tick,
}

/// Follows the clones until each is terminal, the timeout passes, or Ctrl-C.
async fn follow(
    client: Client,
    namespace: &str,
    names: Vec<String>,
    timeout: Duration,
    mut display: Display,
) -> anyhow::Result<Exit> {
    let wanted: BTreeSet<String> = names.iter().cloned().collect();
    let clones = watcher(
        Api::<VirtualMachineClone>::namespaced(client.clone(), namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects()
    .map_ok(|c| Change::Clone(Box::new(c)));
    let volumes = watcher(
        Api::<DataVolume>::namespaced(client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects()
    .map_ok(|d| Change::Volume(Box::new(d)))
    // A cluster without CDI has no DataVolume API: clones still show, without bars.
    .filter(|r| std::future::ready(r.is_ok()));
    let ticks = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some((Ok(Change::Tick), ()))
    });
    let mut changes = std::pin::pin!(futures::stream::select(
        futures::stream::select(clones, volumes),
        ticks
    ));
    let mut world = World {
        clones: names
            .iter()
            .map(|n| (n.clone(), CloneView::default()))
            .collect(),
        ..World::default()
    };
    let deadline = Instant::now() + timeout;
    let ctrl_c = tokio::signal::ctrl_c();
    let mut ctrl_c = std::pin::pin!(ctrl_c);
    loop {
        if world.clones.values().all(CloneView::terminal) {
            display.draw(&world, true);
            return Ok(summary(&world));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::select! {
            next = changes.next() => next,
            () = tokio::time::sleep(left) => {
                display.draw(&world, true);
                eprintln!(
                    "timed out after {}s waiting for {} clone(s); they keep going (kubectl get vmclone -n {namespace})",
                    timeout.as_secs(),
                    world.clones.values().filter(|c| !c.terminal()).count()
                );
                return Ok(Exit::TimedOut);
            }
            _ = &mut ctrl_c => {
                display.draw(&world, true);
                eprintln!(
                    "stopped watching; the clones keep going (kubectl get vmclone -n {namespace})"
                );
                return Ok(Exit::Interrupted);
            }
        };
        match next {
            None => anyhow::bail!("the watch ended"),
            Some(Err(error)) => display.note(&format!("watch error (retrying): {error}")),
            Some(Ok(Change::Clone(clone))) => {
                let name = clone.name_any();
                if wanted.contains(&name) {
                    let view = CloneView::of(&clone);
                    if world.clones.get(&name) != Some(&view) {
                        display.clone_changed(&name, &view);
                        world.clones.insert(name, view);
                    }
                }
            }
            Some(Ok(Change::Volume(dv))) => {
                let owner = dv
                    .owner_references()
                    .iter()
                    .find(|o| o.kind == clone_api::names::VIRTUAL_MACHINE_KIND)
                    .map(|o| o.name.clone());
                let Some(owner) = owner else { continue };
                let status = dv.status.clone().unwrap_or_default();
                let view = VolumeView {
                    name: dv.name_any(),
                    phase: status.phase.unwrap_or_else(|| "Pending".to_owned()),
                    percent: status
                        .progress
                        .as_deref()
                        .and_then(|p| p.trim_end_matches('%').parse().ok()),
                };
                let entry = world.volumes.entry(owner.clone()).or_default();
                if entry.get(&view.name) != Some(&view) {
                    display.volume_changed(&owner, &view);
                    entry.insert(view.name.clone(), view);
                }
            }
            Some(Ok(Change::Tick)) => {}
        }
        display.draw(&world, false);
    }
}

/// Prints each failure with its reason and message; the exit status.
fn summary(world: &World) -> Exit {
    let failed: Vec<(&String, &CloneView)> = world
        .clones
        .iter()
        .filter(|(_, c)| c.phase == "Failed")
        .collect();
    for (name, clone) in &failed {
        eprintln!("clone {name} failed: {}: {}", clone.reason, clone.message);
    }
    let succeeded = world.clones.len() - failed.len();
    println!("{succeeded} of {} clone(s) succeeded", world.clones.len());
    if failed.is_empty() {
        Exit::Success
    } else {
        Exit::Failed
    }
}

/// The live display: redrawn in place on a terminal, timestamped lines otherwise.
#[derive(Debug)]
struct Display {
    terminal: bool,
    /// Lines drawn last time (terminal), to move back over.
    drawn: usize,
    last_draw: Option<Instant>,
}

impl Display {
    fn new(terminal: bool) -> Self {
        Display {
            terminal,
            drawn: 0,
            last_draw: None,
        }
    }

    fn stamp() -> String {
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    fn note(&mut self, text: &str) {
        if !self.terminal {
            println!("{} {text}", Self::stamp());
        }
    }

    fn clone_changed(&mut self, name: &str, view: &CloneView) {
        if !self.terminal {
            println!("{} {name} {} {}", Self::stamp(), view.phase, view.message);
        }
    }

    fn volume_changed(&mut self, target: &str, view: &VolumeView) {
        if !self.terminal {
            let progress = view
                .percent
                .map(|p| format!(" {p:.1}%"))
                .unwrap_or_default();
            println!(
                "{} {target} volume {} {}{progress}",
                Self::stamp(),
                view.name,
                view.phase
            );
        }
    }

    /// Redraws the terminal display (at most every 200 ms unless `force`).
    fn draw(&mut self, world: &World, force: bool) {
        if !self.terminal {
            return;
        }
        if !force
            && self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        let lines = render(world);
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            // Back to the first line of the last drawing, and clear from there.
            let _ = write!(out, "\x1b[{}A\r\x1b[J", self.drawn);
        }
        for line in &lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        self.drawn = lines.len();
    }
}

/// The lines of the terminal display.
fn render(world: &World) -> Vec<String> {
    let width = world.clones.keys().map(String::len).max().unwrap_or(0);
    let mut lines = Vec::new();
    for (name, clone) in &world.clones {
        let mut message = clone.message.clone();
        if message.chars().count() > 80 {
            message = message.chars().take(77).collect::<String>() + "...";
        }
        lines.push(format!("{name:width$}  {:<18} {message}", clone.phase));
        let target = clone.target.as_deref().unwrap_or_default();
        for volume in world.volumes_of(clone) {
            let label = clone_core::datavolume::volume_of(&volume.name, target, &clone.uid)
                .unwrap_or(&volume.name);
            lines.push(format!("  {}", bar(label, volume)));
        }
    }
    lines
}

/// `root [##########----------]  50.0% CloneInProgress` (also `disk`'s bar)
pub(crate) fn bar(label: &str, volume: &VolumeView) -> String {
    const WIDTH: usize = 20;
    let done = matches!(
        volume.phase.as_str(),
        "Succeeded" | "WaitForFirstConsumer" | "PendingPopulation"
    );
    let percent = if done {
        100.0
    } else {
        volume.percent.unwrap_or(0.0)
    };
    let filled = ((percent / 100.0) * WIDTH as f64)
        .round()
        .clamp(0.0, WIDTH as f64) as usize;
    format!(
        "{label} [{}{}] {percent:5.1}% {}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        volume.phase
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_fills_with_the_percentage() {
        let half = VolumeView {
            name: "root".into(),
            phase: "CloneInProgress".into(),
            percent: Some(50.0),
        };
        assert_eq!(
            bar("root", &half),
            "root [##########----------]  50.0% CloneInProgress"
        );
        let done = VolumeView {
            phase: "Succeeded".into(),
            percent: None,
            ..half
        };
        assert!(bar("root", &done).starts_with("root [####################] 100.0%"));
    }

    #[test]
    fn the_display_lists_each_clone_with_its_volumes() {
        let mut world = World::default();
        world.clones.insert(
            "a".into(),
            CloneView {
                phase: "CreatingTargetVM".into(),
                target: Some("t".into()),
                ..CloneView::default()
            },
        );
        world.volumes.entry("t".into()).or_default().insert(
            "dv".into(),
            VolumeView {
                name: "t-data".into(),
                phase: "CloneInProgress".into(),
                percent: Some(10.0),
            },
        );
        let lines = render(&world);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("a  CreatingTargetVM"), "{lines:?}");
        assert!(lines[1].starts_with("  data [##"), "{lines:?}");
    }
}
