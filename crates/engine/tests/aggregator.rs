//! Aggregation invariants through the aggregator itself (routing, dedup, windows, summary):
//! for random sample sets, window means and summary statistics equal a direct recomputation,
//! whatever the arrival order and however often batches are resent.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use qss_domain::num::round2;
use qss_domain::sample::{MediaMetrics, MeetingType, ParticipantMetrics, ParticipantQos};
use qss_domain::{Sample, Settings};
use qss_engine::aggregator::{Aggregator, Arrival, EmittedObject, Placement};

const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;

fn sample(participant: u8, ts: i64, latency: f64, loss: f64) -> Sample {
    Sample::ParticipantQos(ParticipantQos {
        meeting_id: "m".into(),
        meeting_type: MeetingType::Meeting,
        participant_id: format!("p{participant}"),
        user_id: None,
        user_name: None,
        timestamp: ts,
        metrics: ParticipantMetrics {
            audio: Some(MediaMetrics {
                bitrate: 64.0,
                latency,
                jitter: 3.0,
                packet_loss: loss,
                resolution: None,
                frame_rate: None,
            }),
            ..Default::default()
        },
    })
}

/// Feeds `order` (indexes into `samples`) and returns the emitted objects, keyed.
fn run(
    samples: &[Sample],
    order: &[usize],
) -> (BTreeMap<(String, String), serde_json::Value>, usize) {
    let mut agg = Aggregator::new();
    let settings = Arc::new(Settings {
        aggregation_interval_seconds: 10,
        aggregation_grace_seconds: 0,
        ..Default::default()
    });
    let mut changes = Vec::new();
    let mut n = 0;
    let mut duplicates = 0;
    for &i in order {
        n += 1;
        let at = Arrival {
            seq: n,
            received_ms: T0,
            interval_s: 10,
        };
        let mut id = || "mi_1".to_string();
        if agg.ingest("acct", &samples[i], at, &mut id, &mut changes) == Placement::Duplicate {
            duplicates += 1;
        }
    }
    let mut ended = Vec::new();
    let mut id = || unreachable!();
    let end = Sample::MeetingEnded(qss_domain::sample::MeetingEnded {
        meeting_id: "m".into(),
        timestamp: T0 + 59_000,
    });
    agg.ingest(
        "acct",
        &end,
        Arrival {
            seq: n + 1,
            received_ms: T0,
            interval_s: 10,
        },
        &mut id,
        &mut ended,
    );
    let mut emissions = Vec::new();
    agg.take_due(
        T0 + 3_600_000,
        &|_| Some(settings.clone()),
        &mut emissions,
        &mut changes,
    );
    let out = emissions
        .into_iter()
        .map(|e| {
            let v = match &e.object {
                EmittedObject::Participant(o) => serde_json::to_value(o).unwrap(),
                EmittedObject::Summary(o) => serde_json::to_value(o).unwrap(),
                EmittedObject::Phone(o) => serde_json::to_value(o).unwrap(),
            };
            ((e.object.event_type().as_str().to_string(), e.dedup_key), v)
        })
        .collect();
    (out, duplicates)
}

fn nearest_rank(sorted: &[f64], p: usize) -> f64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn windows_and_summary_match_a_direct_recomputation_in_any_order_and_with_resends(
        raw in prop::collection::vec((0u8..3, 0i64..600, 0.0f64..400.0, 0.0f64..10.0), 1..80),
        seed in any::<u64>(),
        resend in 0usize..20,
    ) {
        // One sample per (participant, 100 ms slot): distinct keys.
        let mut seen = std::collections::HashSet::new();
        let samples: Vec<Sample> = raw
            .iter()
            .filter(|(p, slot, _, _)| seen.insert((*p, *slot)))
            .map(|(p, slot, lat, loss)| sample(*p, T0 + slot * 100, (lat * 100.0).round() / 100.0, (loss * 100.0).round() / 100.0))
            .collect();
        let in_order: Vec<usize> = (0..samples.len()).collect();
        // A deterministic shuffle from the seed, plus some resent samples.
        let mut shuffled = in_order.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let resent: Vec<usize> = (0..resend).map(|k| shuffled[k % shuffled.len()]).collect();
        shuffled.extend(&resent);

        let (a, dup_a) = run(&samples, &in_order);
        let (b, dup_b) = run(&samples, &shuffled);
        prop_assert_eq!(dup_a, 0);
        prop_assert_eq!(dup_b, resent.len());
        prop_assert_eq!(&a, &b);

        // Direct recomputation per window, and for the summary.
        let mut windows: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
        let mut all = Vec::new();
        for smp in &samples {
            let Sample::ParticipantQos(p) = smp else { unreachable!() };
            let lat = p.metrics.audio.as_ref().unwrap().latency;
            windows.entry((p.participant_id.clone(), p.timestamp - p.timestamp.rem_euclid(10_000))).or_default().push(lat);
            all.push(lat);
        }
        let participant_events: Vec<&serde_json::Value> =
            a.iter().filter(|((t, _), _)| t == "qss.meeting_participant_qos").map(|(_, v)| v).collect();
        prop_assert_eq!(participant_events.len(), windows.len());
        for v in participant_events {
            let pid = v["participant_id"].as_str().unwrap().to_string();
            let start = qss_domain::timefmt::parse_datetime(v["timestamp"].as_str().unwrap()).unwrap();
            let lats = &windows[&(pid, start)];
            prop_assert_eq!(v["sample_count"].as_u64().unwrap() as usize, lats.len());
            let mean = round2(lats.iter().sum::<f64>() / lats.len() as f64);
            prop_assert!((v["metrics"]["audio"]["latency"].as_f64().unwrap() - mean).abs() < 1e-9);
        }
        let summary = a.iter().find(|((t, _), _)| t == "qss.meeting_qos_summary").map(|(_, v)| v).unwrap();
        prop_assert_eq!(summary["sample_count"].as_u64().unwrap() as usize, samples.len());
        all.sort_by(f64::total_cmp);
        let stats = &summary["metrics"]["audio"]["latency"];
        prop_assert!((stats["avg"].as_f64().unwrap() - round2(all.iter().sum::<f64>() / all.len() as f64)).abs() < 1e-9);
        prop_assert_eq!(stats["min"].as_f64().unwrap(), round2(all[0]));
        prop_assert_eq!(stats["max"].as_f64().unwrap(), round2(*all.last().unwrap()));
        prop_assert_eq!(stats["p50"].as_f64().unwrap(), round2(nearest_rank(&all, 50)));
        prop_assert_eq!(stats["p95"].as_f64().unwrap(), round2(nearest_rank(&all, 95)));
    }
}
