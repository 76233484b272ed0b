//! Crash test: a child process writes through the runtime and reports every acknowledged write
//! over a pipe; it is SIGKILLed at varying points, the store is reopened, and every
//! acknowledged write must be there and no revoked actor may activate. 24 cycles on one store.
//! The same child stopped by SIGTERM must shut down cleanly (exit 0) with the same guarantee.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use agentkeys_runtime::store::Status;
use agentkeys_runtime::{CallError, ManualClock, Omni, Registry};
use agentkeys_tests::{DRAIN, Ping, Probe, T0, open_store, start_runtime};

const CYCLES: u64 = 24;

#[derive(Debug, Default)]
struct Acked {
    /// omni → (parent, label); masters have no parent.
    creates: BTreeMap<Omni, Option<(Omni, String)>>,
    revokes: Vec<Omni>,
}

fn kill_after(cycle: u64) -> usize {
    // Spread the kill point from a handful of writes to a few hundred.
    let mut x = 0x2545_f491_4f6c_dd1d ^ (cycle * 0x9e37_79b9);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    5 + usize::try_from(x % 300).unwrap_or(0)
}

/// How the child is stopped.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Kill,
    Term,
}

fn run_child(dir: &std::path::Path, cycle: u64, stop: Stop, acked: &mut Acked) -> usize {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(dir)
        .arg(cycle.to_string())
        .args((stop == Stop::Term).then_some("--graceful"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let limit = kill_after(cycle);
    let mut seen = 0;
    let record = |line: String, acked: &mut Acked| {
        let parts: Vec<_> = line.split(' ').collect();
        match parts.as_slice() {
            ["C", omni, "-", "-"] => {
                acked.creates.insert(omni.parse().expect("omni"), None);
            }
            ["C", omni, parent, label] => {
                let parent: Omni = parent.parse().expect("omni");
                acked.creates.insert(
                    omni.parse().expect("omni"),
                    Some((parent, label.to_string())),
                );
            }
            ["R", omni] => acked.revokes.push(omni.parse().expect("omni")),
            _ => panic!("unexpected line {line:?}"),
        }
    };
    for line in lines.by_ref() {
        record(line.expect("utf-8"), acked);
        seen += 1;
        if seen >= limit {
            break;
        }
    }
    match stop {
        Stop::Kill => child.kill().expect("SIGKILL"),
        Stop::Term => {
            let pid = child.id().to_string();
            let sent = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill");
            assert!(sent.success());
        }
    }
    // Lines already in the pipe were printed after their acknowledgement: they count too.
    for line in lines {
        let Ok(line) = line else { break };
        record(line, acked);
        seen += 1;
    }
    let status = child.wait().expect("reaped");
    if stop == Stop::Term {
        assert!(
            status.success(),
            "graceful shutdown exits 0, got {status:?}"
        );
    }
    seen
}

fn verify(dir: &std::path::Path, acked: &Acked) {
    actix::System::new().block_on(async {
        let clock = ManualClock::new(T0);
        let runtime = start_runtime(open_store(dir), &clock);
        let registry = Registry::<Probe>::new(&runtime, ());
        let store = runtime.store().clone();
        for (omni, placement) in &acked.creates {
            let record = store
                .actor(omni)
                .expect("read")
                .expect("acknowledged create survives");
            if let Some((parent, label)) = placement {
                assert_eq!(record.parent.as_ref(), Some(parent));
                assert_eq!(&record.label, label);
            }
        }
        for omni in &acked.revokes {
            let record = store
                .actor(omni)
                .expect("read")
                .expect("revoked actor exists");
            assert!(
                record.revoked_at().is_some(),
                "acknowledged revocation survives"
            );
            assert!(
                matches!(
                    registry.call(*omni, Ping).await,
                    Err(CallError::Revoked { .. })
                ),
                "a revoked actor re-activated"
            );
        }
        // Activation agrees with the computed status for a sample of the tree.
        for omni in acked.creates.keys().rev().take(150) {
            let status = runtime.status(omni).expect("read").expect("exists");
            let answer = registry.call(*omni, Ping).await;
            match status {
                Status::Active => assert_eq!(answer.expect("delivered").expect("live"), *omni),
                Status::Revoked { .. } => {
                    assert!(
                        matches!(answer, Err(CallError::Revoked { .. })),
                        "{answer:?}"
                    )
                }
            }
        }
        runtime.shutdown(DRAIN).await;
    });
}

#[test]
fn acknowledged_writes_survive_sigkill_and_revoked_actors_stay_dead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = Acked::default();
    let mut total = 0;
    for cycle in 0..CYCLES {
        total += run_child(dir.path(), cycle, Stop::Kill, &mut acked);
        verify(dir.path(), &acked);
    }
    assert!(
        total >= CYCLES as usize * 5,
        "the children acknowledged {total} writes"
    );
    assert!(!acked.revokes.is_empty(), "revocations were exercised");
    eprintln!(
        "crash test: {CYCLES} kills, {} creates and {} revocations acknowledged",
        acked.creates.len(),
        acked.revokes.len()
    );
}

#[test]
fn sigterm_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = Acked::default();
    for cycle in 0..4 {
        run_child(dir.path(), 100 + cycle, Stop::Term, &mut acked);
        verify(dir.path(), &acked);
    }
    assert!(!acked.creates.is_empty());
}
