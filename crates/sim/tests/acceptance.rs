//! Acceptance tests of the simulator: deterministic by seed, every sample accepted by the
//! server's own validation, and networks that score the way their names say.

use std::collections::BTreeMap;

use qss_domain::event::{Grade, Issue};
use qss_domain::ingest::{BodyFormat, IngestLimits, parse_batch};
use qss_domain::sample::ParticipantQos;
use qss_domain::{Sample, Thresholds};
use qss_engine::ParticipantWindowAcc;
use qss_sim::{NetworkMix, SimConfig, Simulation};

const START: i64 = 1_700_000_000_000;
const WINDOW_MS: i64 = 60_000;

fn config(network: NetworkMix) -> SimConfig {
    SimConfig {
        meetings: 3,
        participants: 4,
        calls: 2,
        sample_interval_ms: 5_000,
        network,
        mean_meeting_ms: 4 * 60_000,
        mean_call_ms: 2 * 60_000,
    }
}

/// Runs a simulation for `minutes`, stepping once a second like the CLI, and returns each step's
/// time with its samples.
fn run(network: NetworkMix, seed: u64, minutes: i64) -> Vec<(i64, Vec<Sample>)> {
    let mut sim = Simulation::new(config(network), seed, START);
    let end = START + minutes * 60_000;
    let mut steps: Vec<(i64, Vec<Sample>)> = (START..end)
        .step_by(1_000)
        .map(|now| (now, sim.step(now)))
        .collect();
    steps.push((end, sim.finish(end)));
    steps
}

fn all_samples(steps: &[(i64, Vec<Sample>)]) -> Vec<Sample> {
    steps.iter().flat_map(|(_, s)| s.clone()).collect()
}

#[test]
fn the_same_seed_gives_the_same_samples_and_another_seed_differs() {
    let a = all_samples(&run(NetworkMix::Mixed, 42, 10));
    let b = all_samples(&run(NetworkMix::Mixed, 42, 10));
    let c = all_samples(&run(NetworkMix::Mixed, 43, 10));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn every_sample_passes_the_servers_validation() {
    let limits = IngestLimits {
        max_samples: 10_000,
        max_sample_age_ms: 86_400_000,
    };
    for network in [NetworkMix::Good, NetworkMix::Mixed, NetworkMix::Poor] {
        let steps = run(network, 7, 15);
        let mut kinds = BTreeMap::new();
        for (now, samples) in steps.iter().filter(|(_, s)| !s.is_empty()) {
            for s in samples {
                *kinds.entry(s.kind()).or_insert(0) += 1;
            }
            let body = qss_sim::batch_body(samples);
            let parsed = parse_batch(&body, BodyFormat::Json, *now, &limits);
            match parsed {
                Ok(parsed) => assert_eq!(&parsed, samples),
                Err(e) => panic!("{network:?} batch at {now} rejected: {e:?}"),
            }
        }
        for kind in ["participant_qos", "call_qos", "meeting_ended", "call_ended"] {
            assert!(kinds.contains_key(kind), "{network:?} produced no {kind}");
        }
    }
}

/// The quality of every full 60 s window of every participant.
fn window_qualities(network: NetworkMix) -> Vec<qss_domain::event::Quality> {
    let samples = all_samples(&run(network, 3, 20));
    let mut windows: BTreeMap<(String, String, i64), Vec<ParticipantQos>> = BTreeMap::new();
    for sample in samples {
        if let Sample::ParticipantQos(s) = sample {
            let start = s.timestamp - s.timestamp.rem_euclid(WINDOW_MS);
            let key = (s.meeting_id.clone(), s.participant_id.clone(), start);
            windows.entry(key).or_default().push(s);
        }
    }
    let thresholds = Thresholds::default();
    windows
        .values()
        .filter(|samples| samples.len() >= 10)
        .map(|samples| {
            let mut acc = ParticipantWindowAcc::new();
            samples.iter().for_each(|s| acc.add(s));
            acc.quality(&thresholds)
        })
        .collect()
}

fn share(
    qualities: &[qss_domain::event::Quality],
    f: impl Fn(&qss_domain::event::Quality) -> bool,
) -> f64 {
    qualities.iter().filter(|q| f(q)).count() as f64 / qualities.len() as f64
}

#[test]
fn a_good_network_gives_good_windows() {
    let qualities = window_qualities(NetworkMix::Good);
    assert!(qualities.len() >= 50, "only {} windows", qualities.len());
    let good = share(&qualities, |q| q.grade == Grade::Good);
    assert!(good >= 0.9, "only {good:.2} of windows are good");
    let clean = share(&qualities, |q| {
        !q.issues.iter().any(|i| {
            matches!(
                i,
                Issue::HighLatency | Issue::HighPacketLoss | Issue::LowMos
            )
        })
    });
    assert!(
        clean >= 0.9,
        "only {clean:.2} of windows have no network issue"
    );
}

#[test]
fn a_poor_network_gives_poor_or_bad_windows_with_matching_issues() {
    let qualities = window_qualities(NetworkMix::Poor);
    assert!(qualities.len() >= 50, "only {} windows", qualities.len());
    let poor = share(&qualities, |q| matches!(q.grade, Grade::Poor | Grade::Bad));
    assert!(poor >= 0.8, "only {poor:.2} of windows are poor or bad");
    let tagged = share(&qualities, |q| {
        q.issues.contains(&Issue::LowMos)
            && (q.issues.contains(&Issue::HighLatency) || q.issues.contains(&Issue::HighPacketLoss))
    });
    assert!(
        tagged >= 0.8,
        "only {tagged:.2} of windows carry low_mos with a network tag"
    );
}
